"""The smoke SPDF study through Snakemake: every stage's outputs exist and hold the grid's rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.study_declaration import load_declaration

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
GRID = load_declaration("spdf").grids["smoke"]


def snakemake(*args: str, data_dir: Path, env_extra: dict | None = None, cwd: Path = ROOT):
    env = (
        os.environ
        | {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "WANDB_MODE": "offline",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        }
        | (env_extra or {})
    )
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--nolock", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


def run_smoke_study(target: str, data_dir: Path, out: Path) -> Path:
    """Run one study's target at smoke scale into ``out`` (results, reports, prepared data)."""
    proc = snakemake(
        target,
        "--config",
        "scale=smoke",
        f"data_dir={data_dir}",
        f"results_dir={out}/results",
        f"reports_dir={out}/reports",
        data_dir=data_dir,
        env_extra={"SPARSELM_PREPARED_DIR": str(out / "prep")},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def study(data_dir, tmp_path_factory) -> Path:
    return run_smoke_study("reproduce_spdf", data_dir, tmp_path_factory.mktemp("study"))


def test_every_stage_wrote_its_files(study):
    res = study / "results" / "spdf"
    n_pre = len(GRID["sparsities"]) * len(GRID["seeds"])
    n_ft = n_pre * len(GRID["tasks"]) * len(GRID["fractions"])
    assert len(list(res.glob("pretrain/*/metrics.json"))) == n_pre
    assert len(list(res.glob("finetune/*/*/metrics.json"))) == n_ft
    assert len(list(res.glob("eval_zeroshot/*/results.json"))) == n_pre
    assert len(list(res.glob("eval_nlg/*/*/results.json"))) == n_ft
    for results in res.glob("eval_*/**/results.json"):
        data = json.loads(results.read_text())
        assert len(data["weights_sha256"]) == 64 and data["versions"], results
    # W&B offline run folders for every tracked job
    assert len(list(res.glob("**/wandb/offline-run-*"))) == n_pre * 2 + n_ft * 2


def test_tables_hold_the_grid(study):
    tables = study / "results" / "spdf" / "tables"
    main = pd.read_csv(tables / "spdf_table_main.csv")
    assert sorted(main["sparsity"]) == sorted(GRID["sparsities"])
    drop = pd.read_csv(tables / "spdf_table_rel_drop.csv")
    sparse = [s for s in GRID["sparsities"] if s > 0]
    assert len(drop) == len(sparse) * len(GRID["tasks"]) * len(GRID["fractions"])
    zero = pd.read_csv(tables / "spdf_table_zeroshot.csv")
    assert len(zero) == len(GRID["sparsities"])
    for name in ("spdf_table_main", "spdf_table_zeroshot", "spdf_table_rel_drop"):
        assert (tables / f"{name}.md").read_text().count("\n") >= 3


def test_figures_and_report(study):
    figures = study / "results" / "spdf" / "figures"
    for name in (
        "spdf_fig_flops_vs_metric",
        "spdf_fig_rel_degradation",
        "spdf_fig_pretrain_curves",
        "spdf_fig_drop_heatmap",
    ):
        for ext in ("png", "pdf", "csv"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    report = (study / "reports" / "spdf.md").read_text()
    for claim in ("(a)", "(b)", "(c)", "(d)"):
        assert claim in report
    assert "spdf_fig_flops_vs_metric.png" in report


def test_the_runs_its_jobs_logged_to_wandb_give_every_table_and_figure(study):
    """Every job logged a W&B run offline, and those runs (name, config, summary and history, as
    the tracker really logged them) give every table and figure the files give."""
    from helpers import assert_wandb_outputs_are_the_files, offline_runs

    results = study / "results" / "spdf"
    assert_wandb_outputs_are_the_files("spdf", results, offline_runs(results))


def test_bad_study_config_fails_before_any_job(data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"spdf": {"grids": {"smoke": GRID | {"sparsities": [0.0, 1.5]}}}})
    )
    proc = snakemake(
        "reproduce_spdf",
        "--configfile",
        str(bad),
        "--config",
        "scale=smoke",
        f"data_dir={data_dir}",
        f"results_dir={tmp_path}/results",
        data_dir=data_dir,
    )
    assert proc.returncode != 0
    assert "spdf.grids.smoke.sparsities.1" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
    proc = snakemake("reproduce_spdf", "-n", "--config", "scale=huge", data_dir=data_dir)
    assert proc.returncode != 0 and "key scale" in proc.stdout + proc.stderr


def test_forced_rerun_never_deletes_raw_data(data_dir, tmp_path):
    """Snakemake deletes a job's outputs before rerunning it: no rule owns the data directory
    (the tokenizer job fetches what is missing itself), so --forceall leaves the dataset whole."""
    local = tmp_path / "data"
    (local / "tiny_shakespeare").mkdir(parents=True)
    original = (data_dir / "tiny_shakespeare" / "input.txt").read_bytes()
    (local / "tiny_shakespeare" / "input.txt").write_bytes(original)
    tokenizer = tmp_path / "results" / "spdf" / "prepare" / "tokenizer.json"
    for forced in ((), ("--forceall",)):
        proc = snakemake(
            str(tokenizer),
            *forced,
            "--config",
            "scale=smoke",
            f"data_dir={local}",
            f"results_dir={tmp_path}/results",
            data_dir=local,
            env_extra={"SPARSELM_PREPARED_DIR": str(tmp_path / "prep")},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert tokenizer.is_file()
        assert (local / "tiny_shakespeare" / "input.txt").read_bytes() == original


BLOCK_IMPORTS = '''
import sys
from analysis.study_declaration import load_declaration


class _Refuse:
    """Fails any import of torch, Hydra/OmegaConf or the entry points while the DAG is built."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "hydra", "omegaconf") or name.startswith("sparselm.cli"):
            raise ImportError(f"building the DAG imported {name}")
        return None


sys.meta_path.insert(0, _Refuse())
'''


def test_building_the_dag_imports_no_torch_hydra_or_entry_points(data_dir, tmp_path):
    """Parsing the workflow stays cheap and free of job logic: no Hydra composition, no torch,
    no FLOP solving (a pinned MST variant reads its knob from its source run at job time)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_IMPORTS)
    proc = snakemake(
        "reproduce_spdf",
        "reproduce_raptr",
        "reproduce_squarehead",
        "reproduce_mst",
        "-n",
        "--config",
        "scale=smoke",
        f"data_dir={data_dir}",
        f"results_dir={tmp_path}/results",
        data_dir=data_dir,
        env_extra={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "/mst/pretrain/mst_seed0/metrics.json" in proc.stdout


def test_snakemake_lint_is_clean(data_dir):
    proc = snakemake("--lint", "--config", "scale=smoke", f"data_dir={data_dir}", data_dir=data_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out[-3000:]

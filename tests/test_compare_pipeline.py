"""The smoke comparison study through Snakemake: every variant ran with its own method on the
same model and data, and the table, figure and report exist with one finite row per variant;
its DAG builds without torch and is sized as the grid says."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import assert_wandb_outputs_are_the_files, offline_runs
from test_pipeline import BLOCK_IMPORTS, run_smoke_study, snakemake

from analysis.study_declaration import load_declaration

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
GRIDS = load_declaration("compare").grids
GRID = GRIDS["smoke"]
VARIANTS = list(GRID["variants"])
METHODS = {"dense": "none", "static": "static_sparse", "raptr": "raptr", "rigl": "rigl"}
VERDICT = r"(HELD|DID NOT HOLD|INCONCLUSIVE|NOT TESTABLE)"
FINITE = [
    "final_val_loss_mean", "flops_total_mean", "flops_reduction_mean", "loss_at_budget_mean",
    "step_time_s_mean", "step_time_rel_mean", "flops_per_step_rel_mean", "budget",
]  # fmt: skip


@pytest.fixture(scope="module")
def study(data_dir, tmp_path_factory) -> Path:
    return run_smoke_study("reproduce_compare", data_dir, tmp_path_factory.mktemp("compare"))


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_every_variant_ran_its_own_method_on_the_same_model(study):
    pre = study / "results" / "compare" / "pretrain"
    runs = {f"{v}_seed{s}" for v in VARIANTS for s in GRID["seeds"]}
    assert {p.parent.name for p in pre.glob("*/metrics.json")} == runs
    tokens = set()
    for name in runs:
        config = yaml.safe_load((pre / name / "config.yaml").read_text())
        variant = name.rsplit("_seed", 1)[0]
        assert config["method"]["name"] == METHODS.get(variant, variant), name
        assert config["model"]["n_layer"] == 4  # the grid's overrides reached every job
        tokens.add(_metrics(pre / name)["tokens"])
    assert len(tokens) == 1  # the same tokens for every method
    for sparse in ("static", "rigl"):
        config = yaml.safe_load((pre / f"{sparse}_seed0" / "config.yaml").read_text())
        assert config["method"]["sparsity"]["level"] == 0.75
    dense = _metrics(pre / "dense_seed0")["flops_total"]
    assert dense / _metrics(pre / "mst_seed0")["flops_total"] >= 2.5  # MST at its budget
    assert dense / _metrics(pre / "raptr_seed0")["flops_total"] > 1.0


def test_wandb_rebuilds_the_comparison_table_the_files_give(study):
    """From the W&B runs the jobs wrote offline, as the tracker really logged them."""
    from analysis import wandb_compare

    results = study / "results" / "compare"
    runs = offline_runs(results)
    assert_wandb_outputs_are_the_files("compare", results, runs)
    made, n_runs = wandb_compare.study_outputs(wandb_compare.study_declaration("compare"), runs)
    tables = made["tables"]
    assert list(tables) == list(load_declaration("compare").tables)
    table = tables["compare_table_main"][0]
    from_files = pd.read_csv(results / "tables" / "compare_table_main.csv")
    assert n_runs == len(VARIANTS) * len(GRID["seeds"])
    assert list(table["variant"]) == list(from_files["variant"])
    assert list(table["schedule"]) == list(from_files["schedule"])
    for column in FINITE:  # rel 1e-9: the CSV's text round trip of full-precision floats
        assert list(table[column]) == pytest.approx(list(from_files[column]), rel=1e-9), column


def test_the_table_has_one_finite_row_per_variant(study):
    tables = study / "results" / "compare" / "tables"
    main = pd.read_csv(tables / "compare_table_main.csv").set_index("variant")
    assert list(main.index) == VARIANTS
    for column in FINITE:
        assert main[column].map(math.isfinite).all(), column
    assert main.loc["dense", "flops_reduction_mean"] == pytest.approx(1.0)
    assert main.loc["dense", "step_time_rel_mean"] == pytest.approx(1.0)
    assert main["budget"].iloc[0] == pytest.approx(main["flops_total_mean"].min())
    markdown = (tables / "compare_table_main.md").read_text().splitlines()
    assert len(markdown) == 2 + len(VARIANTS)


def test_figure_and_report(study):
    figures = study / "results" / "compare" / "figures"
    for ext in ("png", "pdf", "csv"):
        assert (figures / f"compare_fig_loss_vs_flops.{ext}").stat().st_size > 0, ext
    plotted = pd.read_csv(figures / "compare_fig_loss_vs_flops.csv")
    assert set(plotted["variant"]) == set(VARIANTS)
    assert (study / "reports" / "compare_figures" / "compare_fig_loss_vs_flops.png").is_file()
    report = (study / "reports" / "compare.md").read_text()
    for section in ("## What was run", "## Claims", "## Caveats", "## Provenance"):
        assert section in report
    for variant in VARIANTS[1:]:
        assert re.search(rf"{variant} reaches a lower val loss than dense .+: {VERDICT}", report)
    assert "dense kernels" in report and "wandb_compare" in report


def test_building_the_compare_dag_imports_no_torch_hydra_or_entry_points(data_dir, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_IMPORTS)
    proc = snakemake(
        "reproduce_compare",
        "-n",
        "--config",
        "scale=smoke",
        f"data_dir={data_dir}",
        f"results_dir={tmp_path}/results",
        data_dir=data_dir,
        env_extra={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "/compare/pretrain/dense_seed0/metrics.json" in proc.stdout


def test_the_tiny_grid_schedules_fifteen_runs_on_the_raptr_tiny_model(data_dir, tmp_path):
    proc = snakemake(
        "reproduce_compare",
        "-n",
        "-p",
        "--config",
        "scale=tiny",
        f"data_dir={data_dir}",
        f"results_dir={tmp_path}/results",
        data_dir=data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [line for line in proc.stdout.splitlines() if "sparselm.cli.pretrain" in line]
    assert len(jobs) == len(GRIDS["tiny"]["variants"]) * len(GRIDS["tiny"]["seeds"]) == 15
    assert all("model.n_layer=8 model.d_model=64" in job for job in jobs)
    assert not any("sparselm.cli.evaluate" in line for line in proc.stdout.splitlines())


def test_a_variant_that_names_no_method_fails_before_any_job(data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    # config dicts merge, so a variant cannot be dropped: break dense's method instead
    variants = GRID["variants"] | {"dense": "model.n_layer=4"}
    bad.write_text(yaml.safe_dump({"compare": {"grids": {"smoke": GRID | {"variants": variants}}}}))
    proc = snakemake(
        "reproduce_compare",
        "--configfile",
        str(bad),
        "--config",
        "scale=smoke",
        f"data_dir={data_dir}",
        f"results_dir={tmp_path}/results",
        data_dir=data_dir,
    )
    assert proc.returncode != 0
    assert "compare.grids.smoke.variants.dense" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_the_slurm_profile_gives_the_studys_gpu_rules_a_gpu():
    # the study's runs go through the one pretrain and eval_zeroshot rules every study shares
    profile = yaml.safe_load((ROOT / "pipelines/profiles/slurm/config.yaml").read_text())
    for rule in ("pretrain", "eval_zeroshot"):
        assert profile["set-resources"][rule]["gres"] == "gpu:1", rule
        assert profile["set-threads"][rule] == 8

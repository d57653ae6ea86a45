"""The smoke RaPTr study through Snakemake: every run, zero-shot score, table, figure, verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_pipeline import run_smoke_study, snakemake

from analysis.study_declaration import load_declaration

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
GRID = load_declaration("raptr").grids["smoke"]
VARIANTS = list(GRID["variants"])
VERDICT = r"(HELD|DID NOT HOLD|INCONCLUSIVE|NOT TESTABLE)"


@pytest.fixture(scope="module")
def study(data_dir, tmp_path_factory) -> Path:
    return run_smoke_study("reproduce_raptr", data_dir, tmp_path_factory.mktemp("raptr_study"))


def test_every_variant_and_seed_ran_and_was_scored(study):
    res = study / "results" / "raptr"
    runs = {f"{v}_seed{s}" for v in VARIANTS for s in GRID["seeds"]}
    assert {p.parent.name for p in res.glob("pretrain/*/metrics.json")} == runs
    assert {p.parent.name for p in res.glob("eval_zeroshot/*/results.json")} == runs
    for results in res.glob("eval_zeroshot/*/results.json"):
        data = json.loads(results.read_text())
        assert len(data["weights_sha256"]) == 64 and data["versions"], results
    # the variant's overrides reached the job: its method, and the smoke study's 4 layers
    config = yaml.safe_load((res / "pretrain" / "raptr_nofixed_seed0" / "config.yaml").read_text())
    assert config["method"]["name"] == "raptr" and config["method"]["fixed_layers"] == []
    assert config["model"]["n_layer"] == 4
    log = res / "pretrain" / "raptr_seed0" / "train_log.jsonl"
    lengths = {json.loads(line)["path_len"] for line in log.read_text().splitlines()}
    assert len(lengths) > 1  # RaPTr really sampled paths of different lengths


def test_tables_hold_one_row_per_variant(study):
    tables = study / "results" / "raptr" / "tables"
    main = pd.read_csv(tables / "raptr_table_main.csv")
    assert list(main["variant"]) == VARIANTS
    assert main.set_index("variant").loc["baseline", "flops_rel"] == pytest.approx(1.0)
    assert (main.set_index("variant").loc["raptr", ["flops_rel", "block_flops_rel"]] < 1).all()
    assert main["zeroshot_acc_mean"].notna().all()
    zero = pd.read_csv(tables / "raptr_table_zeroshot.csv")
    assert list(zero["variant"]) == VARIANTS
    trans = pd.read_csv(tables / "raptr_table_transitions.csv")
    assert {"raptr", "raptr_noscale", "raptr_nofixed", "stacking"} <= set(trans["variant"])


def test_figures_and_report(study):
    figures = study / "results" / "raptr" / "figures"
    names = (
        "raptr_fig_loss_vs_flops",
        "raptr_fig_loss_vs_steps_transitions",
        "raptr_fig_ablation",
        "raptr_fig_schedule",
    )
    for name in names:
        for ext in ("png", "pdf", "csv"):
            assert (figures / f"{name}.{ext}").stat().st_size > 0, (name, ext)
        assert (study / "reports" / "raptr_figures" / f"{name}.png").is_file()
    report = (study / "reports" / "raptr.md").read_text()
    assert re.search(rf"RaPTr matched baseline loss \(within .+\) at .+ FLOPs: {VERDICT}", report)
    assert re.search(rf"Stage transitions stable \(.+\): {VERDICT}", report)
    for claim in ("(a)", "(b)", "(c)", "(d)"):
        assert claim in report


def test_the_runs_its_jobs_logged_to_wandb_give_every_table_and_figure(study):
    """Every job logged a W&B run offline, and those runs (name, config, summary and history, as
    the tracker really logged them) give every table and figure the files give."""
    from helpers import assert_wandb_outputs_are_the_files, offline_runs

    results = study / "results" / "raptr"
    assert_wandb_outputs_are_the_files("raptr", results, offline_runs(results))


def test_bad_raptr_config_fails_before_any_job(data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    # every variant names its method (config dicts merge, so a variant cannot be removed here)
    variants = GRID["variants"] | {"raptr": "model.n_layer=4"}
    bad.write_text(yaml.safe_dump({"raptr": {"grids": {"smoke": GRID | {"variants": variants}}}}))
    proc = snakemake(
        "reproduce_raptr",
        "--configfile",
        str(bad),
        "--config",
        "scale=smoke",
        f"data_dir={data_dir}",
        f"results_dir={tmp_path}/results",
        data_dir=data_dir,
    )
    assert proc.returncode != 0
    assert "raptr.grids.smoke.variants.raptr" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()

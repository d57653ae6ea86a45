"""The smoke SquareHead study through Snakemake: every student, score, table, figure, verdict."""

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
GRID = load_declaration("squarehead").grids["smoke"]
VERDICT = r"(HELD|DID NOT HOLD|INCONCLUSIVE|NOT TESTABLE)"


@pytest.fixture(scope="module")
def study(data_dir, tmp_path_factory) -> Path:
    return run_smoke_study("reproduce_squarehead", data_dir, tmp_path_factory.mktemp("sqhead"))


def _runs() -> set[str]:
    return {
        f"{p}_s{float(s)}_{loss}_seed{seed}"
        for p in GRID["pruners"]
        for s in GRID["sparsities"]
        for loss in GRID["losses"]
        for seed in GRID["seeds"]
    }


def test_every_student_ran_kept_its_mask_and_was_scored(study):
    res = study / "results" / "squarehead"
    task = GRID["task"]
    assert {p.parent.name for p in res.glob(f"sparse_finetune/{task}/*/metrics.json")} == _runs()
    assert {p.parent.name for p in res.glob(f"eval_sparse_nlg/{task}/*/results.json")} == _runs()
    assert (res / "eval_teacher_nlg" / task / "dense_seed0" / "metrics.json").is_file()
    for path in res.glob(f"sparse_finetune/{task}/*/metrics.json"):
        m = json.loads(path.read_text())
        assert m["mask_zero_outside"] and m["mask_nnz_unchanged"], path
        target = float(path.parent.name.split("_s")[1].split("_")[0])
        assert m["mask_sparsity"] == pytest.approx(target, abs=5e-3), path
    # the teacher is fine-tuned by this study (its own teacher_overrides) from the SPDF
    # study's dense pre-training run of the same seed, which both studies share
    cfg = yaml.safe_load((res / "sparse_finetune" / task / "sparsegpt_s0.9_ce_seed0" /
                          "config.yaml").read_text())  # fmt: skip
    assert cfg["teacher"].endswith(f"squarehead/finetune/{task}/s0.0_f1.0_seed0")
    teacher_cfg = res / "finetune" / task / "s0.0_f1.0_seed0" / "config.yaml"
    teacher = yaml.safe_load(teacher_cfg.read_text())
    assert teacher["pretrained"].endswith("spdf/pretrain/s0.0_seed0")
    assert cfg["distill"]["squarehead"] == 0.0 and cfg["prune"]["calibration_samples"] == 16


def test_tables_figures_and_report(study):
    res = study / "results" / "squarehead"
    main = pd.read_csv(res / "tables" / "sqhead_table_main.csv", dtype={"target": str})
    n_cells = len(GRID["pruners"]) * len(GRID["sparsities"]) * len(GRID["losses"])
    assert len(main) == n_cells + 1  # + the dense teacher
    assert main["bleu_mean"].notna().all() and main["final_val_loss_mean"].notna().all()
    gap = pd.read_csv(res / "tables" / "sqhead_table_gap.csv")
    assert len(gap) == n_cells and gap["damage_mean"].notna().all()
    for name in ("sqhead_fig_acc_vs_sparsity", "sqhead_fig_loss_curves",
                 "sqhead_fig_layerwise_error"):  # fmt: skip
        for ext in ("png", "pdf", "csv"):
            assert (res / "figures" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
        assert (study / "reports" / "squarehead_figures" / f"{name}.png").is_file()
    report = (study / "reports" / "squarehead.md").read_text()
    assert re.search(rf"recovers more task quality \(BLEU\) than CE .+: {VERDICT}", report)
    assert re.search(rf"lower held-out task loss than CE .+: {VERDICT}", report)
    assert re.search(rf"SparseGPT damages the model less .+: {VERDICT}", report)


def test_bad_squarehead_config_fails_before_any_job(data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    grid = GRID | {"losses": ["ce", "mse"]}
    bad.write_text(yaml.safe_dump({"squarehead": {"grids": {"smoke": grid}}}))
    proc = snakemake(
        "reproduce_squarehead", "--configfile", str(bad), "--config", "scale=smoke",
        f"results_dir={tmp_path}/r", data_dir=data_dir,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "key squarehead.grids.smoke.losses.1" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_wandb_rebuilds_every_table_the_files_give(study):
    """From the W&B runs the jobs wrote offline, as the tracker really logged them: every table
    and figure as the files give them, and the tables' numbers checked column by column."""
    from helpers import assert_wandb_outputs_are_the_files, offline_runs

    from analysis import wandb_compare

    results = study / "results" / "squarehead"
    runs = offline_runs(results)
    assert_wandb_outputs_are_the_files("squarehead", results, runs)
    made, n_runs = wandb_compare.study_outputs(wandb_compare.study_declaration("squarehead"), runs)
    tables = made["tables"]
    assert n_runs == 2 * len(_runs()) + 2 * len(GRID["seeds"])  # students, scorings, teachers
    assert list(tables) == list(load_declaration("squarehead").tables)
    for stem, (table, _) in tables.items():
        from_files = pd.read_csv(results / "tables" / f"{stem}.csv", dtype={"target": str})
        assert list(table.columns) == list(from_files.columns), stem
        keys = ["pruner", "target", "loss"]
        assert (
            table[keys].astype(str).values.tolist() == from_files[keys].astype(str).values.tolist()
        ), stem
        numbers = [c for c in table.columns if c.endswith(("_mean", "_ci95", "_n"))]
        assert numbers, stem
        for column in numbers:  # rel 1e-9: the CSV's text round trip of full-precision floats
            expected = from_files[column].tolist()
            assert table[column].tolist() == pytest.approx(expected, rel=1e-9, nan_ok=True), (
                stem,
                column,
            )

"""The analysis layer on a fake but complete SPDF results tree (no checkpoints, no GPU)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis import build, spdf_tables, wandb_compare
from analysis import collect as collect_mod
from analysis.stats import format_mean_ci, mean_ci
from analysis.study_declaration import load_declaration
from analysis.study_runs import StudyRuns

SPARSITIES = (0.0, 0.5, 0.75)
SEEDS = (1, 2)
TASKS = {
    "e2e": ("sparselm_e2e_nlg", 60.0, 4200),
    "webnlg": ("sparselm_webnlg", 50.0, 1800),
    "dart": ("sparselm_dart", 40.0, 6200),
}
FRACTIONS = (0.1, 1.0)
REDUCTION = {0.0: 1.0, 0.5: 1.3, 0.75: 1.5}
DENSE_PER_TOKEN = 6.0e6
TOKENS = 1_000_000


def fake_bleu(task: str, sparsity: float, fraction: float, seed: int) -> float:
    """Drops grow with sparsity, train-set size and fraction, so every claim holds."""
    _, base, size = TASKS[task]
    return base - sparsity * size / 2000 * (0.5 + fraction) + (0.3 if seed == 1 else -0.2)


def fake_task_ce(task: str, sparsity: float, fraction: float, seed: int) -> float:
    """Held-out task CE that degrades like fake_bleu (the primary measure at tiny)."""
    _, _, size = TASKS[task]
    return 1.0 + size / 1e4 + sparsity * size / 1e5 * (0.5 + fraction) + seed / 1000


def _write(path: Path, data: dict | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _train_metrics(per_token: float, val_loss: float) -> dict:
    return {
        "steps": 100,
        "tokens": TOKENS,
        "flops_total": per_token * TOKENS,
        "final_train_loss": val_loss - 0.1,
        "final_val_loss": val_loss,
        "final_val_ppl": math.exp(val_loss),
        "wall_time_s": 10.0,
        "tokens_per_s": 1e5,
    }


def _pretrain_run(root: Path, s: float, seed: int) -> None:
    run = root / "pretrain" / f"s{s}_seed{seed}"
    per_token = DENSE_PER_TOKEN / REDUCTION[s]
    _write(
        run / "metrics.json",
        _train_metrics(per_token, 3.0 + s + seed / 100)
        | {
            "dense_train_flops_per_token": DENSE_PER_TOKEN,
            "train_flops_per_token": per_token,
            "flops_reduction": REDUCTION[s],
            "flops_convention": "megatron_full_attn",
            "data": "pg_books",
            "static_sparsity": s,
        },
    )
    log = [
        {
            "step": k,
            "tokens": k * 10_000,
            "flops_cum": k * 10_000 * per_token,
            "lr": 1e-3,
            "train_loss": 5 - k / 50,
            "grad_norm": 1.0,
            "sparsity_global": s,
            "sparsity_by_kind": {"q": s},
            "tokens_per_s": 1e5,
        }
        | ({"val_loss": 5 + s - k / 40} if k % 50 == 0 else {})
        for k in range(0, 101, 10)
    ]
    _write(run / "train_log.jsonl", "\n".join(json.dumps(r) for r in log) + "\n")
    _write(
        run / "config.yaml",
        f"seed: {seed}\nmodel:\n  name: tiny\n  block_size: 256\n"
        "train:\n  seq_len: 256\nflops:\n  convention: megatron_full_attn\n",
    )
    zeroshot = {
        "sparselm_arc_easy/acc,none": 0.4 - s / 10 + seed / 1000,
        "sparselm_arc_easy/acc_stderr,none": 0.01,
        "sparselm_hellaswag/acc,none": 0.3,
        "sparselm_hellaswag/acc_norm,none": 0.31 - s / 20,
        "sparselm_wikitext/word_perplexity,none": 100 + 50 * s,
        "sparselm_wikitext/alias": "wikitext",
    }
    _write(root / "eval_zeroshot" / f"s{s}_seed{seed}" / "metrics.json", zeroshot)
    _write(root / "eval_zeroshot" / f"s{s}_seed{seed}" / "config.yaml", f"checkpoint: {run}\n")


def _finetune_run(root: Path, task: str, s: float, f: float, seed: int) -> None:
    lm_task, _, size = TASKS[task]
    name = f"s{s}_f{f}_seed{seed}"
    _write(
        root / "finetune" / task / name / "metrics.json",
        _train_metrics(1e6, fake_task_ce(task, s, f, seed))
        | {
            "task": task,
            "fraction": f,
            "train_examples": int(size * f),
            "keep_mask": False,
            "pretrained": "x",
        },
    )
    split = "dev[:0.9]" if task == "dart" else "train"
    _write(
        root / "finetune" / task / name / "config.yaml",
        f"seed: {seed}\npretrained: {root / 'pretrain' / f's{s}_seed{seed}'}\n"
        f"task:\n  split_map:\n    train: {split}\n",
    )
    _write(
        root / "eval_nlg" / task / name / "config.yaml",
        f"checkpoint: {root / 'finetune' / task / name}\n",
    )
    bleu = fake_bleu(task, s, f, seed)
    _write(
        root / "eval_nlg" / task / name / "metrics.json",
        {
            f"{lm_task}/bleu": bleu,
            f"{lm_task}/bleu_stderr": 0.5,
            f"{lm_task}/rougeL": bleu + 5,
            f"{lm_task}/chrf": bleu + 10,
            f"{lm_task}/ter": 100 - bleu,
        },
    )


def make_results(root: Path) -> Path:
    for s in SPARSITIES:
        for seed in SEEDS:
            _pretrain_run(root, s, seed)
            for task in TASKS:
                for f in FRACTIONS:
                    _finetune_run(root, task, s, f, seed)
    return root


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return make_results(tmp_path / "results" / "spdf")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A results tree with tables, figures and reports/spdf.md, made through the CLIs."""
    root = tmp_path_factory.mktemp("study")
    results = make_results(root / "results" / "spdf")
    # one evaluation saved its generations (as sparselm.cli.evaluate does)
    saved = results / "eval_nlg" / "e2e" / "s0.0_f1.0_seed1" / "generations"
    saved.mkdir()
    records = [{"input": f"x{i}", "output": "y", "references": ["y"]} for i in range(3)]
    (saved / "sparselm_e2e_nlg.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert build.main(["runs", "--study", "spdf", "--results", str(results)]) == 0
    assert build.main(["tables", "--study", "spdf", "--results", str(results)]) == 0
    assert build.main(["figures", "--study", "spdf", "--results", str(results)]) == 0
    out = root / "reports" / "spdf.md"
    assert (
        build.main(["report", "--study", "spdf", "--results", str(results), "--out", str(out)]) == 0
    )
    return results


def test_collect_rows_and_wildcards(results: Path) -> None:
    frame = collect_mod.collect(results)
    counts = frame.groupby("stage").size().to_dict()
    # 12 numeric pretrain keys x 6 runs; 10 numeric finetune keys x 36 runs (keep_mask is a
    # bool, task/pretrained are strings); 5 NLG metrics x 36; 5 zero-shot numbers x 6 (alias: str)
    assert counts == {"pretrain": 72, "finetune": 360, "eval_nlg": 180, "eval_zeroshot": 30}
    assert list(frame.columns) == collect_mod.COLUMNS
    assert set(frame["sparsity"]) == set(SPARSITIES) and set(frame["seed"]) == set(SEEDS)
    ft = frame[frame["stage"] == "finetune"]
    assert set(ft["task"]) == set(TASKS) and set(ft["fraction"]) == set(FRACTIONS)
    assert frame.loc[frame["stage"] == "pretrain", "fraction"].isna().all()
    zs = frame[frame["stage"] == "eval_zeroshot"]
    assert set(zs["task"]) == {"arc_easy", "hellaswag", "wikitext"}
    assert {"acc", "acc_norm", "acc_stderr", "word_perplexity"} <= set(zs["metric"])
    nlg = frame[(frame["stage"] == "eval_nlg") & (frame["metric"] == "bleu")]
    row = nlg[
        (nlg["task"] == "dart")
        & (nlg["sparsity"] == 0.75)
        & (nlg["fraction"] == 0.1)
        & (nlg["seed"] == 2)
    ]
    assert row["value"].item() == pytest.approx(fake_bleu("dart", 0.75, 0.1, 2))
    assert row["source"].item().endswith("eval_nlg/dart/s0.75_f0.1_seed2/metrics.json")


def test_run_values_come_from_the_runs_files_not_folder_names(results: Path, tmp_path) -> None:
    # a copied tree (the configs still name the old paths) and a folder name carrying no value
    moved = tmp_path / "elsewhere" / "spdf"
    shutil.copytree(results, moved)
    shutil.rmtree(results)
    (moved / "eval_nlg" / "dart" / "s0.75_f0.1_seed2").rename(moved / "eval_nlg" / "dart" / "x")
    frame = collect_mod.collect(moved)
    row = frame[(frame["source"].str.contains("dart/x/")) & (frame["metric"] == "bleu")]
    assert row[["sparsity", "fraction", "seed"]].values.tolist() == [[0.75, 0.1, 2]]
    assert collect_mod.short_task("sparselm_e2e_nlg") == "e2e"


def test_a_run_without_its_values_is_one_line_naming_file_and_key(results: Path, capsys) -> None:
    metrics = results / "pretrain" / "s0.5_seed1" / "metrics.json"
    metrics.write_text(json.dumps({"final_val_loss": 3.0}))
    assert build.main(["runs", "--study", "spdf", "--results", str(results)]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"spdf_runs: {metrics} has no 'static_sparsity': it was not written by this suite's job"
    )
    assert not (results / "tables" / "runs.csv").exists()


def test_pretrain_curves(results: Path) -> None:
    curves = collect_mod.load_curves(results, "sparsity")
    labels_and_values = ["sparsity", "seed", *collect_mod.CURVE_COLUMNS]
    assert list(curves.columns[: len(labels_and_values)]) == labels_and_values
    assert "sparsity_by_kind/q" in curves.columns  # nested values flattened as W&B logs them
    assert len(curves) == 6 * 11 and curves["val_loss"].notna().sum() == 6 * 3


def test_mean_ci_is_student_t() -> None:
    mean, ci, n = mean_ci([1.0, 2.0, 4.0])
    assert (mean, n) == (pytest.approx(7 / 3), 3)
    assert ci == pytest.approx(stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    one = mean_ci([5.0])
    assert one[0] == 5.0 and math.isnan(one[1]) and format_mean_ci(*one) == "5.00 (n=1)"


def test_main_table_matches_hand_computation(built: Path) -> None:
    results = built
    table = pd.read_csv(results / "tables" / "spdf_table_main.csv").set_index("sparsity")
    for task in TASKS:
        for s in SPARSITIES:
            values = [fake_bleu(task, s, 1.0, seed) for seed in SEEDS]
            half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(2)
            assert table.at[s, f"{task}_bleu_mean"] == pytest.approx(np.mean(values))
            assert table.at[s, f"{task}_bleu_ci95"] == pytest.approx(half)
    assert table.at[0.75, "pretrain_flops_total"] == pytest.approx(DENSE_PER_TOKEN / 1.5 * TOKENS)
    assert table.at[0.5, "flops_reduction"] == pytest.approx(1.3)
    md = (results / "tables" / "spdf_table_main.md").read_text()
    dense_e2e = [fake_bleu("e2e", 0.0, 1.0, seed) for seed in SEEDS]
    half = stats.t.ppf(0.975, 1) * np.std(dense_e2e, ddof=1) / np.sqrt(2)
    assert f"{np.mean(dense_e2e):.2f} ± {half:.2f}" in md
    drop = pd.read_csv(results / "tables" / "spdf_table_rel_drop.csv")
    row = drop[(drop["task"] == "dart") & (drop["sparsity"] == 0.75) & (drop["fraction"] == 1.0)]
    dense = np.mean([fake_bleu("dart", 0.0, 1.0, seed) for seed in SEEDS])
    sparse = np.mean([fake_bleu("dart", 0.75, 1.0, seed) for seed in SEEDS])
    assert row["rel_drop_pct"].item() == pytest.approx(100 * (dense - sparse) / dense)
    zs = (results / "tables" / "spdf_table_zeroshot.md").read_text()
    assert "hellaswag acc_norm" in zs and "arc_easy acc" in zs and "word_perplexity" in zs


def test_figures_written(built: Path) -> None:
    results = built
    for stem in load_declaration("spdf").figures:
        for ext in ("png", "pdf", "csv"):
            path = results / "figures" / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
    size = pd.read_csv(results / "figures" / "spdf_fig_rel_degradation.csv")
    assert set(size["train_examples"]) == {s for _, _, s in TASKS.values()}


def test_report_has_verdicts_and_tables(built: Path) -> None:
    results = built
    assert (results / "tables" / "runs.csv").is_file()  # collect's default output
    text = (results.parents[1] / "reports" / "spdf.md").read_text()
    # the fake seeds shift every cell alike, so paired differences have zero spread and the
    # intervals resolve; (a) is a check by construction away from the paper's scale
    expected = {"a": "NOT TESTABLE", "b": "DID NOT HOLD", "c": "HELD", "d": "HELD"}
    for key, verdict in expected.items():
        section = text.split(f"### ({key}) ")[1]
        assert section.split("\n\n")[1].startswith(f"**Verdict: {verdict}.**"), key
    for stem in load_declaration("spdf").tables:
        assert (results / "tables" / f"{stem}.md").read_text().strip() in text
    assert "](spdf_figures/spdf_fig_drop_heatmap.png)" in text  # copied beside the report
    assert (results.parents[1] / "reports" / "spdf_figures" / "spdf_fig_drop_heatmap.png").is_file()
    assert "84 metrics.json files" in text and "Seeds: 1, 2" in text and "`tiny`" in text
    assert "E2E 4,200 from `train`, WebNLG 1,800 from `train`, DART 6,200 from `dev[:0.9]`" in text
    assert "the paper's order returns" in text
    # at tiny the fine-tuning claims are judged on held-out task CE, BLEU shown beside it
    section_b = text.split("### (b) ")[1].split("### (c)")[0]
    assert "|Δheld-out task CE|" in section_b and "Secondary (BLEU, not used" in section_b


def test_primary_measure_is_task_ce_on_cpu_models_and_bleu_from_gpt2_small_up() -> None:
    from analysis.spdf_claims import BLEU_MEASURE, CE_MEASURE, Scale, primary_measure

    assert primary_measure(Scale("tiny", 128)) is CE_MEASURE
    assert primary_measure(Scale("gpt2_small", 1024)) is BLEU_MEASURE


def _bleu_rows(cells: dict[tuple[str, float], list[float]]) -> pd.DataFrame:
    rows = [
        {"stage": "eval_nlg", "task": task, "sparsity": s, "fraction": 1.0, "seed": seed,
         "metric": "bleu", "value": v}
        for (task, s), values in cells.items()
        for seed, v in enumerate(values)
    ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "sparse, verdict",
    [
        ([30.2, 29.9, 30.4], "HELD"),  # ΔBLEU within ±1 with room to spare
        ([27.0, 26.5, 27.2], "DID NOT HOLD"),  # about −3 on every seed
        ([29.0, 31.5, 28.0], "INCONCLUSIVE"),  # the interval straddles the tolerance
        ([27.0], "INCONCLUSIVE"),  # one seed: no interval, however far the mean
    ],
)
def test_bleu_claim_verdict_follows_the_paired_interval(sparse, verdict) -> None:
    from analysis.spdf_claims import claim_bleu_within_one

    runs = _bleu_rows({("e2e", 0.0): [30.0, 30.1, 30.3], ("e2e", 0.75): sparse})
    assert claim_bleu_within_one(runs).verdict == verdict


def test_bleu_claims_are_not_testable_below_the_dense_floor() -> None:
    from analysis.spdf_claims import claim_bleu_within_one, claim_grows_with_sparsity

    runs = _bleu_rows(
        {("e2e", 0.0): [0.4, 0.6], ("e2e", 0.5): [0.3, 0.2], ("e2e", 0.75): [0.1, 0.0]}
    )
    assert claim_bleu_within_one(runs).verdict == "NOT TESTABLE"
    assert claim_grows_with_sparsity(runs).verdict == "NOT TESTABLE"


def test_report_links_saved_generations(built: Path) -> None:
    report = built.parents[1] / "reports" / "spdf.md"
    section = report.read_text().split("## Saved generations")[1]
    row = "| eval_nlg | e2e | s0.0_f1.0_seed1 | 3 | [sparselm_e2e_nlg.jsonl]("
    assert row in section
    link = section.split(row)[1].split(")")[0]
    assert (report.parent / link).resolve() == (
        built / "eval_nlg/e2e/s0.0_f1.0_seed1/generations/sparselm_e2e_nlg.jsonl"
    ).resolve()


def test_report_without_tables_fails_cleanly(results: Path, tmp_path: Path, capsys) -> None:
    assert (
        build.main(
            [
                "report",
                "--study",
                "spdf",
                "--results",
                str(results),
                "--out",
                str(tmp_path / "r.md"),
            ]
        )
        == 1
    )
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_wandb_compare_offline_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "t.csv"
    assert wandb_compare.main(["--entity", "nobody", "--group", "spdf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("wandb_compare: W&B is offline")
    assert not out.exists()


def test_wandb_compare_api_errors_are_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    class Broken:
        def runs(self, path, filters):
            raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(wandb_compare.WandbUnavailable, match="ConnectionError: no route to host$"):
        wandb_compare.fetch_runs("e", "sparselm", "spdf", api=Broken())


def test_wandb_compare_labels_spdf_runs_as_their_files_do(results: Path) -> None:
    """W&B runs recorded from the results tree: the resolved config plus the ``run_dir`` the
    tracker logs beside it, metrics.json as the summary. An evaluation's config names only its
    checkpoint, so its sparsity and fraction come from the runs it leads back to."""

    class Run:
        def __init__(self, folder: Path) -> None:
            config = yaml.safe_load((folder / "config.yaml").read_text())
            self.config = config | {"run_dir": str(folder).replace("results", "elsewhere")}
            self.summary_metrics = json.loads((folder / "metrics.json").read_text())
            self.path, self.id = ["e", "sparselm", str(id(self))], "x"

        def scan_history(self):  # the curves: not what this test reads
            return iter(())

    class Api:
        def runs(self, path, filters):
            assert filters == {"group": "spdf"}
            return [Run(f.parent) for f in sorted(results.glob("**/metrics.json"))]

    runs = wandb_compare.fetch_runs("e", "sparselm", "spdf", api=Api())
    from_wandb, _, _ = wandb_compare.study_frames("sparsity", "spdf", runs)
    from_files = collect_mod.collect(results)
    pd.testing.assert_frame_equal(main_table_from(from_wandb), main_table_from(from_files))
    # every table, by the one function both sources go through
    made = wandb_compare.study_outputs(wandb_compare.study_declaration("spdf"), runs)[0]["tables"]
    assert list(made) == list(load_declaration("spdf").tables)
    for stem, (numbers, shown) in spdf_tables.make_tables(from_files, StudyRuns()).items():
        pd.testing.assert_frame_equal(made[stem][0], numbers)
        pd.testing.assert_frame_equal(made[stem][1], shown)
    bleu = from_wandb[(from_wandb["metric"] == "bleu") & (from_wandb["task"] == "dart")]
    assert set(bleu["sparsity"]) == set(SPARSITIES) and set(bleu["fraction"]) == set(FRACTIONS)


def main_table_from(frame: pd.DataFrame) -> pd.DataFrame:
    return spdf_tables.main_table(frame).set_index("sparsity")

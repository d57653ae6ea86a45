"""The RaPTr analysis layer on a fake but complete results tree (no training, no checkpoints)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis import build, raptr_claims, raptr_runs, raptr_tables
from analysis import collect as collect_mod
from analysis.run_specs import load_specs
from analysis.run_store import RunFilesError
from analysis.study_declaration import load_declaration
from analysis.verdicts import FAILED, HELD, INCONCLUSIVE, UNTESTABLE

N_LAYER, STEPS, SEEDS = 4, 40, (0, 1)
RAPTR_METHOD = {
    "name": "raptr",
    "stages": [6, 8, 10, 12],
    "fractions": None,
    "reference_depth": 12,
    "fixed_layers": ["first", "last"],
    "sampling": "bernoulli",
    "scaling": "inverse_p",
    "freeze_skipped_optimizer": False,
    "seed": 0,
}
METHODS = {
    "baseline": {"name": "none"},
    "raptr": RAPTR_METHOD,
    "raptr_noscale": RAPTR_METHOD | {"scaling": "none"},
    "raptr_nofixed": RAPTR_METHOD | {"fixed_layers": []},
    "stacking": {
        "name": "stacking",
        "stages": [6, 9, 12],
        "fractions": None,
        "reference_depth": 12,
    },
    "pld": {
        "name": "layer_drop",
        "theta_bar": 0.5,
        "gamma": 0.1,
        "scaling": "inverse_p",
        "freeze_skipped_optimizer": False,
        "seed": 0,
    },
}
FINAL = {
    "baseline": 4.0,
    "raptr": 4.005,
    "raptr_noscale": 4.02,
    "raptr_nofixed": 4.03,
    "stacking": 4.01,
    "pld": 4.04,
}
FLOPS = {
    "baseline": 1.0,
    "raptr": 0.8,
    "raptr_noscale": 0.8,
    "raptr_nofixed": 0.8,
    "stacking": 0.8,
    "pld": 0.85,
}
ACC = {"arc_easy": 0.4, "piqa": 0.6}


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _val(variant: str, seed: int, step: int, spike: float = 0.0) -> float:
    """Falls linearly to FINAL at the last step; ``spike`` is added just after step 20."""
    return FINAL[variant] + seed * 0.002 + (STEPS - step) / 20 + (spike if 20 < step <= 25 else 0)


def _run(root: Path, variant: str, seed: int, spike: float = 0.0) -> None:
    run = root / "pretrain" / f"{variant}_seed{seed}"
    config = {
        "model": {"name": "fake", "n_layer": N_LAYER, "block_size": 16},
        "train": {"steps": STEPS, "seq_len": 16},
        "flops": {"convention": "megatron"},
        "method": METHODS[variant],
        "seed": seed,
    }
    _write(run / "config.yaml", yaml.safe_dump(config))
    log = []
    for step in range(1, STEPS + 1):
        record = {
            "step": step,
            "tokens": step * 100,
            "flops_cum": step * 1e6 * FLOPS[variant],
            "train_loss": _val(variant, seed, step) + 0.1,
            "path_len": 4,
            "step_time_s": 0.1,
        }
        if step % 5 == 0:
            record["val_loss"] = _val(variant, seed, step, spike if variant == "raptr" else 0)
        log.append(json.dumps(record))
    _write(run / "train_log.jsonl", "\n".join(log) + "\n")
    _write(
        run / "metrics.json",
        {
            "final_val_loss": _val(variant, seed, STEPS),
            "flops_total": STEPS * 1e6 * FLOPS[variant],
            "tokens": STEPS * 100,
            "wall_time_s": 10.0 * FLOPS[variant] + seed,
            "method": "x",
            "steps": STEPS,
        },
    )
    acc = {f"sparselm_{t}/acc": a + seed / 100 for t, a in ACC.items()}
    scored = root / "eval_zeroshot" / f"{variant}_seed{seed}"
    _write(scored / "metrics.json", acc | {"sparselm_wikitext/word_perplexity": 100.0})
    _write(scored / "config.yaml", yaml.safe_dump({"checkpoint": str(run), "seed": seed}))


def make_tree(root: Path, spike: float = 0.0) -> Path:
    for variant in METHODS:
        for seed in SEEDS:
            _run(root, variant, seed, spike)
    return root


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "raptr")


def test_variant_folders_never_clash_with_spdf_folders() -> None:
    assert collect_mod.parse_variant_dir("raptr_nofixed_seed12") == {
        "variant": "raptr_nofixed",
        "seed": 12,
    }
    assert collect_mod.parse_variant_dir("s0.75_seed0") is None
    # SPDF runs are labelled from their files, not parsed; their folders are still no variant's
    assert collect_mod.parse_variant_dir("s0.75_f0.1_seed0") is None


def test_collect_variants(results: Path) -> None:
    frame = collect_mod.collect_variants(results)
    assert set(frame["variant"]) == set(METHODS) and set(frame["seed"]) == set(SEEDS)
    zero = frame[frame["stage"] == "eval_zeroshot"]
    assert set(zero["task"]) == {"arc_easy", "piqa", "wikitext"}
    assert build.main(["runs", "--study", "raptr", "--results", str(results)]) == 0
    assert (results / "tables" / "runs.csv").is_file()
    curves = collect_mod.load_curves(results)
    assert len(curves) == len(METHODS) * len(SEEDS) * STEPS


def test_a_variant_runs_seed_comes_from_its_config_not_its_folder(results: Path) -> None:
    """The folder name carries the variant (its grid label); the seed is the config's, and a
    zero-shot evaluation takes both from the checkpoint it scored, wherever it lies."""
    run = results / "pretrain" / f"pld_seed{SEEDS[0]}"
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(config | {"seed": 7}))
    scored = results / "eval_zeroshot" / f"baseline_seed{SEEDS[0]}"
    moved = f"/elsewhere/raptr/pretrain/pld_seed{SEEDS[0]}"  # a results tree copied away
    (scored / "config.yaml").write_text(yaml.safe_dump({"checkpoint": moved, "seed": 0}))
    frame = collect_mod.collect_variants(results)
    pld = frame[frame["variant"] == "pld"]
    assert set(pld["seed"]) == {7, *SEEDS[1:]}
    evals = frame[frame["source"] == str(scored / "metrics.json")]
    assert set(evals["variant"]) == {"pld"} and set(evals["seed"]) == {7}
    curves = collect_mod.load_curves(results)
    assert set(curves.loc[curves["variant"] == "pld", "seed"]) == {7, *SEEDS[1:]}
    assert load_specs(results)["pld"].variant == "pld"
    stray = results / "pretrain" / "scratch"  # no run's folder: skipped, not an error
    _write(stray / "metrics.json", {"final_val_loss": 1.0})
    _write(stray / "train_log.jsonl", json.dumps({"step": 1}) + "\n")
    with pytest.warns(UserWarning, match="scratch/metrics.json: not a <variant>_seed<N> run"):
        assert len(collect_mod.collect_variants(results)) == len(frame)
    assert len(collect_mod.load_curves(results)) == len(curves)
    del config["seed"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RunFilesError, match=r"pld_seed\d+/config.yaml has no 'seed'"):
        collect_mod.collect_variants(results)


def test_schedules_come_from_the_method_functions(results: Path) -> None:
    specs = load_specs(results)
    assert raptr_runs.stage_boundaries(specs["raptr"]) == [10, 20, 30]
    assert raptr_runs.stage_boundaries(specs["stacking"]) == [13, 27]
    assert raptr_runs.stage_boundaries(specs["baseline"]) == []
    assert raptr_runs.block_flop_ratio(specs["raptr"]) == pytest.approx(0.75)
    assert raptr_runs.block_flop_ratio(specs["baseline"]) == 1.0
    assert 0.5 < raptr_runs.block_flop_ratio(specs["pld"]) < 1.0
    assert list(raptr_runs.expected_path_len(specs["raptr"])[[0, 9, 10, 39]]) == pytest.approx(
        [2, 2, 8 / 3, 4]
    )
    assert "fixed=none" in raptr_runs.schedule_label(specs["raptr_nofixed"])


def test_main_table_matches_hand_computation(results: Path) -> None:
    frame = collect_mod.collect_variants(results)
    curves = collect_mod.load_curves(results)
    specs = load_specs(results)
    table = raptr_tables.main_table(frame, specs, curves).set_index("variant")
    assert list(table.index) == [
        "baseline",
        "raptr",
        "raptr_noscale",
        "raptr_nofixed",
        "stacking",
        "pld",
    ]
    raptr = table.loc["raptr"]
    assert raptr["val_loss_mean"] == pytest.approx(4.005 + 0.001)
    assert raptr["val_loss_delta_mean"] == pytest.approx(0.005)
    assert raptr["val_loss_delta_ci95"] == pytest.approx(0.0, abs=1e-9)  # same offset per seed
    assert raptr["flops_rel"] == pytest.approx(0.8)
    assert raptr["block_flops_rel"] == pytest.approx(0.75)
    assert raptr["wall_rel"] == pytest.approx((8.0 + 0.5) / (10.0 + 0.5))
    assert raptr["zeroshot_acc_mean"] == pytest.approx(0.5 + 0.005)  # mean of acc tasks only
    assert int(raptr["val_loss_n"]) == len(SEEDS)
    # iso-FLOP: the baseline's (linear) curve at RaPTr's 0.8x FLOPs, i.e. at step 32
    assert raptr["baseline_val_loss_at_flops"] == pytest.approx(4.0 + 0.001 + 8 / 20)


def test_transitions_table_and_claims(tmp_path: Path) -> None:
    for spike, verdict in ((0.0, HELD), (0.4, FAILED)):
        root = make_tree(tmp_path / f"spike{spike}", spike)
        trans = raptr_tables.transitions_table(collect_mod.load_curves(root), load_specs(root))
        at20 = trans[(trans["variant"] == "raptr") & (trans["boundary_step"] == 20)].iloc[0]
        assert (at20["val_before_step"], at20["val_after_step"]) == (20, 25)
        assert at20["val_jump"] == pytest.approx(-0.25 + spike)
        # the baseline falls 0.25 over the same evals: the judged spike is the excess
        assert at20["val_jump_vs_baseline"] == pytest.approx(spike)
        assert raptr_claims.claim_transitions(trans).verdict == verdict
    assert raptr_claims.claim_transitions(pd.DataFrame()).verdict == UNTESTABLE


def test_loss_claim_verdicts(results: Path) -> None:
    frame = collect_mod.collect_variants(results)
    main = raptr_tables.main_table(frame, load_specs(results))
    # every seed shifts every variant alike, so the paired intervals have zero width
    claim = raptr_claims.claim_matched_loss(main, frame)
    assert claim.verdict == HELD and "20% fewer FLOPs" in claim.statement
    final = (frame["metric"] == "final_val_loss") & (frame["variant"] == "raptr")
    worse = frame.assign(value=frame["value"].where(~final, frame["value"] + 0.05))
    assert raptr_claims.claim_matched_loss(main, worse).verdict == FAILED
    # one seed 0.05 worse, the other as before: the interval straddles the tolerance
    noisy = frame.assign(
        value=frame["value"].where(~(final & (frame["seed"] == 0)), frame["value"] + 0.05)
    )
    assert raptr_claims.claim_matched_loss(main, noisy).verdict == INCONCLUSIVE
    no_base = main[main["variant"] != "baseline"]
    assert raptr_claims.claim_matched_loss(no_base, frame).verdict == UNTESTABLE
    assert raptr_claims.claim_vs_baselines(main, frame).verdict == HELD  # 4.005 vs 4.01, 4.04
    assert raptr_claims.claim_ablation(main, frame).verdict == HELD
    assert math.isclose(raptr_claims.flop_saving(main), 20.0)


def test_figures_tables_and_report(results: Path, tmp_path: Path) -> None:
    assert build.main(["runs", "--study", "raptr", "--results", str(results)]) == 0
    assert build.main(["tables", "--study", "raptr", "--results", str(results)]) == 0
    assert build.main(["figures", "--study", "raptr", "--results", str(results)]) == 0
    for stem in load_declaration("raptr").figures:
        for ext in ("png", "pdf", "csv"):
            assert (results / "figures" / f"{stem}.{ext}").stat().st_size > 0
    schedule = pd.read_csv(results / "figures" / "raptr_fig_schedule.csv")
    assert set(schedule["source"]) == {"schedule", "logged"}
    out = tmp_path / "reports" / "raptr.md"
    assert (
        build.main(["report", "--study", "raptr", "--results", str(results), "--out", str(out)])
        == 0
    )
    text = out.read_text()
    assert "RaPTr matched baseline loss (within 0.01 nats) at 20% fewer FLOPs: HELD" in text
    assert (
        "Stage transitions stable (no loss spike above 0.05 nats after a boundary, relative to "
        "the baseline's change over the same steps): HELD" in text
    )
    assert (tmp_path / "reports" / "raptr_figures" / "raptr_fig_schedule.png").is_file()
    assert "](raptr_figures/raptr_fig_ablation.png)" in text
    assert (
        build.main(["report", "--study", "raptr", "--results", str(results), "--out", str(out)])
        == 0
    )
    assert out.read_text() == text  # no dates: the same results give the same report


def test_report_without_tables_fails_cleanly(results: Path, tmp_path: Path, capsys) -> None:
    assert (
        build.main(
            [
                "report",
                "--study",
                "raptr",
                "--results",
                str(results),
                "--out",
                str(tmp_path / "r.md"),
            ]
        )
        == 1
    )
    assert "raptr_report:" in capsys.readouterr().err


def test_wandb_rebuilds_every_table_the_files_give(results: Path) -> None:
    """The RaPTr tables from W&B runs recorded from the jobs' files (configs, summaries and
    pre-training histories) equal the tables made from the files, every one of them."""
    from helpers import RecordedRun

    from analysis import study_runs, wandb_compare

    runs = [
        RecordedRun(d, stage)
        for stage in ("pretrain", "eval_zeroshot")
        for d in sorted((results / stage).iterdir())
    ]

    class Api:
        def runs(self, path, filters):
            assert filters == {"group": "raptr"}
            return runs

    made, n_runs = wandb_compare.study_outputs(
        wandb_compare.study_declaration("raptr"),
        wandb_compare.fetch_runs("e", "sparselm", "raptr", api=Api()),
    )
    from_wandb = made["tables"]
    frame = collect_mod.collect_variants(results)
    from_files = raptr_tables.make_tables(frame, study_runs.from_files(results, "variant"))
    assert n_runs == len(runs)
    assert list(from_wandb) == list(load_declaration("raptr").tables)
    for stem, (numbers, shown) in from_files.items():
        pd.testing.assert_frame_equal(from_wandb[stem][0], numbers, check_dtype=False)
        pd.testing.assert_frame_equal(from_wandb[stem][1], shown)

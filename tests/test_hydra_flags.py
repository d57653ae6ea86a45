"""Hydra's own flags on every entry point (--help, --cfg, --info, -m) and refused added keys."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from sparselm.cli.common import compose_config, run_cli
from sparselm.cli.hydra_flags import parse_flags, sweep
from sparselm.errors import ConfigError

ENTRY_POINTS = ["pretrain", "finetune", "evaluate", "prepare", "sparse_finetune"]


def _cli(stage: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"sparselm.cli.{stage}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage", ENTRY_POINTS)
def test_help_lists_config_groups_and_exits_zero(stage):
    proc = _cli(stage, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Config groups (group=option; * = the default):" in proc.stdout
    assert "--multirun" in proc.stdout


def test_help_marks_each_groups_options_and_default():
    out = _cli("pretrain", "--help").stdout
    methods = "layer_drop, mst, none*, raptr, rigl, set, stacking, static, static_sparse"
    assert f"  method: {methods}" in out
    assert "  scale: gpu, gpu_smoke, paper, smoke, tiny*" in out


def test_cfg_job_prints_the_composed_config():
    proc = _cli("pretrain", "--cfg", "job", "method=static", "method.level=0.5")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["method"]["level"] == 0.5 and "hydra" not in cfg


def test_info_names_the_search_path_and_defaults():
    proc = _cli("finetune", "--info", "defaults")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Defaults list (group: option):") and "task: e2e" in proc.stdout


def test_unknown_flag_is_one_line():
    proc = _cli("pretrain", "--bogus")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "unknown flag --bogus" in proc.stderr


def test_missing_mandatory_value_is_one_line():
    proc = _cli("finetune", "scale=smoke")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: pretrained is required")


@pytest.mark.parametrize(
    "override, key",
    [
        ("+method.levle=0.5", "method.levle"),
        ("+model.nlayer=5", "model.nlayer"),
        ("+newkey=1", "newkey"),
    ],
)
def test_added_unknown_keys_are_refused(override, key):
    with pytest.raises(ConfigError, match=f"{key} is not a known key"):
        compose_config("pretrain", ["scale=smoke", override])


def test_added_known_key_and_added_group_still_work():
    cfg, _ = compose_config("pretrain", ["scale=smoke", "method=static", "++method.level=0.0"])
    assert cfg.method.level == 0.0


def test_force_add_may_set_a_key_only_some_group_options_have():
    """A study passes ++prune.calibration_samples to every pruner; only SparseGPT reads it."""
    cfg, _ = compose_config(
        "sparse_finetune", ["prune=magnitude", "++prune.calibration_samples=16"]
    )
    assert cfg.prune.calibration_samples == 16


def test_sweep_expands_the_cartesian_product():
    jobs = sweep(["scale=smoke", "seed=1,2", "train.steps=range(3,5)"])
    assert jobs == [
        ["scale=smoke", "seed=1", "train.steps=3"],
        ["scale=smoke", "seed=1", "train.steps=4"],
        ["scale=smoke", "seed=2", "train.steps=3"],
        ["scale=smoke", "seed=2", "train.steps=4"],
    ]


def test_multirun_runs_each_job_in_its_own_folder(tmp_path):
    calls = []

    def main(argv):
        calls.append(list(argv))
        return 0

    main.__module__ = __name__
    with pytest.raises(SystemExit) as done:
        run_cli(main, "pretrain", ["-m", "seed=1,2", f"hydra.sweep.dir={tmp_path}"])
    assert done.value.code == 0
    assert [c[0] for c in calls] == ["seed=1", "seed=2"]
    assert [c[-1] for c in calls] == [
        f"hydra.run.dir={tmp_path / '0'}",
        f"hydra.run.dir={tmp_path / '1'}",
    ]
    assert yaml.safe_load((tmp_path / "multirun.yaml").read_text())[1]["overrides"][0] == "seed=2"


def test_flags_are_split_from_overrides():
    flags = parse_flags(["--cfg", "hydra", "--resolve", "a=1"])
    assert (flags.cfg, flags.resolve, flags.overrides) == ("hydra", True, ["a=1"])
    with pytest.raises(ConfigError, match="--cfg 'bogus'"):
        parse_flags(["--cfg", "bogus"])

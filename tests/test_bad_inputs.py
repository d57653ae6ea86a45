"""Run safety: a rerun never mixes two runs, every bad input is one line, nothing half-written
is trusted. The cases and the table they generate live in ``bad_inputs_table.py``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bad_inputs_table import CASES, DOC, Workspace, markdown, prepared_dir, run_cases, run_entry
from helpers import toy_model
from safetensors.torch import load_file, save_file

from analysis.study_declaration import load_declaration
from sparselm.checkpoint import TrainingState, latest_checkpoint, save_checkpoint
from sparselm.cli.run_folder import (
    LOCK_FILE,
    RESUMABLE_KEYS,
    is_resumable,
    lock_results_dir,
    require_finished,
)
from sparselm.errors import ConfigError, DataError
from sparselm.train import _truncate_log

pytestmark = pytest.mark.slow


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def ws(data_dir, tmp_path_factory, monkeypatch_module) -> Workspace:
    monkeypatch_module.setenv("SPARSELM_DATA_DIR", str(data_dir))
    root = tmp_path_factory.mktemp("bad_inputs")
    prepared = root / "prepared"
    with prepared_dir(prepared):
        yield Workspace(root, prepared).build()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def results(ws):
    kept = ("sparse", "dense", "unfinished", "notes")
    before = {name: _digest(ws.folder(name)) for name in kept}
    with prepared_dir(ws.prepared):
        out = run_cases(ws)
    after = {name: _digest(ws.folder(name)) for name in kept}
    return out, before, after


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_is_one_line_naming_it(case, results):
    code, line = results[0][case]
    assert code == 2, line
    assert line.startswith("error: ") and "\n" not in line, line
    for needle in case.expect:
        assert needle in line, line


def test_refused_reruns_touch_nothing(results):
    _, before, after = results
    assert before == after  # config.yaml, checkpoints, logs: byte for byte


def test_bad_inputs_table_is_current(results):
    assert DOC.read_text() == markdown(results[0]), "run: python tests/bad_inputs_table.py"


def test_overwrite_replaces_a_longer_run_whole(ws, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(ws.folder("dense"), out)  # 2 steps; the new run has 1
    args = ["scale=smoke", "logger=none", "train.eval_every=0", "train.steps=1"]
    with prepared_dir(ws.prepared):
        code, line = run_entry("pretrain", [*args, "overwrite=true", f"hydra.run.dir={out}"])
    assert code == 0, line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000001"]
    assert latest_checkpoint(out).name == "step_00000001"
    assert json.loads((out / "metrics.json").read_text())["steps"] == 1
    assert "steps: 1" in (out / "config.yaml").read_text()
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1]


def test_rerun_changing_only_resumable_keys_resumes(ws, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(ws.folder("unfinished"), out)
    args = ["scale=smoke", "train.eval_every=1", "train.ckpt_every=0", "train.steps=2"]
    args += ["method=static", "method.level=0.75", "logger=none", "train.log_every=1"]
    with prepared_dir(ws.prepared):
        code, line = run_entry("pretrain", [*args, "device=cpu", f"hydra.run.dir={out}"])
    assert code == 0, line
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


@pytest.mark.parametrize(
    "stage,key,extra",
    [("finetune", "pretrained", []), ("sparse_finetune", "teacher", ["prune=magnitude"])],
)
def test_finetune_rerun_refuses_a_retrained_starting_run(ws, tmp_path, stage, key, extra):
    """The same ``pretrained=`` folder, trained again, must not continue the old fine-tune."""
    pre, out = tmp_path / "pre", tmp_path / "ft"
    shutil.copytree(ws.folder("sparse"), pre)
    args = ["scale=smoke", "logger=none", "task=e2e", "train.steps=1", f"{key}={pre}", *extra]
    code, line = run_entry(stage, [*args, f"hydra.run.dir={out}"])
    assert code == 0, line
    (out / "metrics.json").unlink()  # as Snakemake leaves a job it reruns
    weights = latest_checkpoint(pre) / "model.safetensors"
    tensors = load_file(weights)
    tensors["wte.weight"] = tensors["wte.weight"] * 0.5
    save_file(tensors, weights)  # the pretraining run, trained again
    before = _digest(out)
    code, line = run_entry(stage, [*args, f"hydra.run.dir={out}"])
    assert code == 2 and f"{key}: the weights at" in line, line
    assert "not those this run started from" in line and _digest(out) == before


def test_an_unfinished_run_is_used_when_its_checkpoint_is_named(ws):
    ckpt = latest_checkpoint(ws.folder("unfinished"))
    require_finished(ckpt, "pretrained")  # named explicitly: taken as asked
    with pytest.raises(ConfigError, match="unfinished run"):
        require_finished(ws.folder("unfinished"), "pretrained")


def test_prune_keeps_the_checkpoint_it_just_wrote(tmp_path):
    """A fresh start over a longer earlier run once deleted its own final checkpoint."""
    model = toy_model()
    save_checkpoint(tmp_path, TrainingState(step=10), model, None, {}, "", keep_last=1)
    save_checkpoint(tmp_path, TrainingState(step=2), model, None, {}, "", keep_last=1)
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000002"]


def test_torn_last_log_line_is_dropped_atomically(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    _truncate_log(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_log.jsonl"]  # no temp left


def test_damaged_log_line_before_the_end_names_the_file(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1}\ngarbage\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"train_log.jsonl: line 2"):
        _truncate_log(log, 3)


def test_resumable_keys_are_cadence_logging_and_place_only():
    assert "train.steps" not in RESUMABLE_KEYS and not is_resumable("train.steps")
    assert is_resumable("logger.project") and is_resumable("train.log_every")
    assert not is_resumable("train.log_every_typo") and not is_resumable("seed")


# ---------------------------------------------------------------- the study pipeline

ROOT = Path(__file__).resolve().parents[1]


def _snakemake(*args: str, data_dir: Path, config: tuple[str, ...]) -> subprocess.CompletedProcess:
    """``config``: every ``--config`` pair (a second ``--config`` would replace the first)."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--nolock", *args]
    cmd += ["--config", "scale=smoke", f"data_dir={data_dir}", *config]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_unknown_zeroshot_task_fails_when_the_dag_is_built(data_dir, tmp_path):
    grid = load_declaration("spdf").grids
    bad = tmp_path / "bad.yaml"
    smoke = grid["smoke"] | {"zeroshot_tasks": ["sparselm_piqa", "nonexistent_task"]}
    bad.write_text(yaml.safe_dump({"spdf": {"grids": {"smoke": smoke}}}))
    proc = _snakemake(
        "reproduce_spdf", "-n", "--configfile", str(bad), data_dir=data_dir,
        config=(f"results_dir={tmp_path}/results",),
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "spdf.grids.smoke.zeroshot_tasks: unknown task 'nonexistent_task'" in out, out[-2000:]


def _hold_lock(results: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from pathlib import Path\n"
        "from sparselm.cli.run_folder import lock_results_dir\n"
        f"lock_results_dir(Path({str(results)!r})); print('held', flush=True); time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_results_folder_lock_names_its_holder_and_dies_with_it(tmp_path):
    results = tmp_path / "results"
    child = _hold_lock(results)
    try:
        with pytest.raises(ConfigError, match=rf"in use by another pipeline \(pid {child.pid} on "):
            lock_results_dir(results)
    finally:
        child.kill()  # like kill -9: no clean-up runs
        child.wait()
    lock_results_dir(results)  # the stale file does not block
    assert f"pid {os.getpid()} on " in (results / LOCK_FILE).read_text()


def test_second_pipeline_on_one_results_folder_is_refused_before_any_job(data_dir, tmp_path):
    results = tmp_path / "results"
    child = _hold_lock(results)
    try:
        proc = _snakemake(
            "reproduce_spdf", data_dir=data_dir,
            config=(f"results_dir={results}", f"reports_dir={tmp_path}/reports"),
        )  # fmt: skip
    finally:
        child.kill()
        child.wait()
    assert proc.returncode != 0
    assert f"is in use by another pipeline (pid {child.pid} on " in proc.stdout + proc.stderr
    assert sorted(p.name for p in results.iterdir()) == [LOCK_FILE]  # no job ran

"""Training progress on stderr: plain lines when stderr is not a terminal, a bar when it is,
nothing when turned off, and config values checked in one line."""

from __future__ import annotations

import io
import re

import pytest
from helpers import RandomTokens, toy_model
from omegaconf import OmegaConf

from sparselm.cli.builders import train_config
from sparselm.errors import ConfigError
from sparselm.optim import OptimConfig, build_adamw
from sparselm.progress import Progress, resolve_mode
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1)
LINE = re.compile(
    r"^train step (\d+)/(\d+) \(\d+%\) \| loss [\d.]+ \| (?:[\d.e+]+|-) tok/s "
    r"\| elapsed \d+:\d\d:\d\d \| eta (?:\d+:\d\d:\d\d|-)$"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train(tmp_path, steps: int = 4, **cfg) -> None:
    model = toy_model(seed=3)
    run_cfg = TrainConfig(steps=steps, **cfg)
    optimizer = build_adamw(model, OPTIM)
    train(TrainRun(model, optimizer, RandomTokens(), run_cfg, OPTIM, tmp_path / "run"))


def _progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("train step")]


@pytest.mark.parametrize("mode", ["auto", "lines"])
def test_training_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys, mode):
    _train(tmp_path, progress=mode, progress_every_s=0.0)  # pytest's stderr is no terminal
    err = capsys.readouterr().err
    lines = _progress_lines(err)
    assert [LINE.match(line).groups() for line in lines] == [(str(s), "4") for s in range(1, 5)]
    assert "\r" not in err  # no bar redraws in a log file
    assert "eta 0:00:00" in lines[-1] and "- tok/s" in lines[0]


def test_progress_off_prints_nothing(tmp_path, capsys):
    _train(tmp_path, progress="off", progress_every_s=0.0)
    assert capsys.readouterr().err == ""


def test_lines_come_every_n_seconds_or_every_n_steps_and_at_both_ends():
    now = [0.0]
    out = io.StringIO()
    p = Progress("lines", total=10, every_s=5.0, stream=out, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] += 2.0  # a step takes 2 s: lines after steps 1 (first), 4, 7 (>= 5 s) and 10
        p.update(step, loss=3.0, tokens=100 * step)
    steps = [int(LINE.match(line).group(1)) for line in out.getvalue().splitlines()]
    assert steps == [1, 4, 7, 10]
    assert "50 tok/s" in out.getvalue()  # 100 tokens per 2 s step, timed after the first
    assert "eta 0:00:12" in out.getvalue().splitlines()[1]  # 6 steps left at 2 s each
    out = io.StringIO()
    p = Progress("lines", 10, every_s=1e9, every_steps=3, stream=out, clock=lambda: 0.0)
    for step in range(1, 11):
        p.update(step, 3.0, step)
    assert [int(LINE.match(x).group(1)) for x in out.getvalue().splitlines()] == [1, 3, 6, 9, 10]


def test_a_resumed_run_counts_from_its_checkpoint_step():
    out = io.StringIO()
    p = Progress("lines", total=10, initial=6, every_s=0.0, stream=out, clock=lambda: 0.0)
    p.update(7, 2.0, 7000)
    assert out.getvalue().startswith("train step 7/10 (70%)")


def test_auto_is_a_bar_on_a_terminal_and_lines_elsewhere():
    assert resolve_mode("auto", _Terminal()) == "bar"
    assert resolve_mode("auto", io.StringIO()) == "lines"
    assert resolve_mode(False, _Terminal()) == "off" and resolve_mode(True, io.StringIO()) == "bar"
    term = _Terminal()
    p = Progress("auto", total=3, stream=term)
    p.update(1, 2.5, 10)
    p.close()
    assert "train" in term.getvalue() and "\r" in term.getvalue()  # tqdm redraws in place


def test_config_keys_are_checked_in_one_line():
    def cfg(**train) -> OmegaConf:
        return OmegaConf.create({"train": {"steps": 2, **train}})

    assert train_config(OmegaConf.create("train: {steps: 2, progress: off}")).progress == "off"
    tc = train_config(cfg(progress="lines", progress_every_s=10, progress_every=5))
    assert (tc.progress, tc.progress_every_s, tc.progress_every) == ("lines", 10.0, 5)
    for bad, key in (({"progress": "loud"}, "train.progress"), ({"progress_every": -1}, "every")):
        with pytest.raises(ConfigError, match=key) as err:
            train_config(cfg(**bad))
        assert "\n" not in str(err.value)

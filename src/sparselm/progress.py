"""Training progress on stderr: a tqdm bar on a terminal, plain lines anywhere else.

Under sbatch, nohup or a notebook stderr is a file or a pipe, where a bar either prints
nothing useful or floods the log with carriage returns; there ``lines`` mode prints one line
every ``every_s`` seconds (and every ``every_steps`` steps if set):

    train step 120/2000 (6%) | loss 4.312 | 5.1e+04 tok/s | elapsed 0:02:03 | eta 0:32:10
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from sparselm.errors import ConfigError

PROGRESS_MODES = ("auto", "bar", "lines", "off")
_FROM_BOOL = {True: "bar", False: "off", None: "auto"}  # Python callers may pass a bool


def resolve_mode(mode: str | bool | None, stream: TextIO) -> str:
    """``bar``, ``lines`` or ``off``; ``auto`` is a bar on a terminal and lines elsewhere."""
    mode = _FROM_BOOL[mode] if mode is None or isinstance(mode, bool) else mode
    if mode not in PROGRESS_MODES:
        allowed = ", ".join(PROGRESS_MODES)
        raise ConfigError(f"train.progress={mode!r} is unknown; allowed: {allowed}")
    if mode == "auto":
        return "bar" if _isatty(stream) else "lines"
    return mode


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Reports steps ``initial+1 .. total`` of one ``train()`` call (a resumed run starts at
    its checkpoint's step; speed and ETA count this process's steps only)."""

    def __init__(
        self,
        mode: str | bool | None,
        total: int,
        initial: int = 0,
        every_s: float = 30.0,
        every_steps: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.total, self.initial = total, initial
        self.every_s, self.every_steps = every_s, every_steps
        self.clock = clock
        self.start = self.last_print = clock()
        # speed and ETA are timed from the end of this process's first step, which also pays
        # for warm-up (compilation, allocation); a resumed run's earlier tokens don't count
        self.t0 = self.start
        self.tokens0: int | None = None
        self.bar = None
        if self.mode == "bar":
            self.bar = tqdm(
                total=total, initial=initial, desc="train", unit="step", file=self.stream
            )

    def update(self, step: int, loss: float, tokens: int) -> None:
        """After optimizer step ``step`` (1-based); ``tokens`` counts every token so far."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.3f}")
            return
        if self.mode != "lines":
            return
        now = self.clock()
        first = self.tokens0 is None
        if first:
            self.tokens0, self.t0 = tokens, now
        due = (
            first
            or step >= self.total
            or now - self.last_print >= self.every_s
            or (self.every_steps > 0 and step % self.every_steps == 0)
        )
        if due:
            self.last_print = now
            print(self._line(step, loss, tokens, now), file=self.stream, flush=True)

    def _line(self, step: int, loss: float, tokens: int, now: float) -> str:
        timed = now - self.t0
        done = step - self.initial - 1  # steps since the first one
        speed = (tokens - (self.tokens0 or 0)) / timed if done > 0 and timed > 0 else None
        eta = (self.total - step) * timed / done if done > 0 else None
        return " | ".join(
            [
                f"train step {step}/{self.total} ({100 * step // max(1, self.total)}%)",
                f"loss {loss:.4g}",
                f"{speed:.3g} tok/s" if speed is not None else "- tok/s",
                f"elapsed {_clock(now - self.start)}",
                f"eta {_clock(eta)}" if eta is not None else "eta -",
            ]
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

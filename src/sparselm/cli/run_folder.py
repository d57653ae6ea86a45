"""Whether a job may write into its run folder, so that a rerun never mixes two runs.

A training job's folder (``hydra.run.dir``) is either empty, or holds a run. A rerun with
``resume=true`` continues that run only if its resolved config describes the same run: every
key outside ``RESUMABLE_KEYS`` must equal the saved ``config.yaml``. A fresh start
(``resume=false``) into a folder that holds a run is refused; ``overwrite=true`` asks for it
and replaces the old run whole. Every check runs before the job writes anything.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sparselm.cli.common import write_json_atomic
from sparselm.errors import ConfigError

# Keys that may differ between a run and its resumption: they change what is logged, how often
# it is validated or checkpointed, and where it runs, never the weights a step produces.
RESUMABLE_KEYS: tuple[str, ...] = (
    "resume",
    "overwrite",
    "device",
    "paths",
    "logger",
    "train.log_every",
    "train.eval_every",
    "train.ckpt_every",
    "train.keep_checkpoints",
    "train.progress",
    "train.progress_every",
    "train.progress_every_s",
)

# What a job writes into its folder; ``overwrite=true`` deletes only folders made of these, so
# a mistyped ``hydra.run.dir`` (a home folder, a checkout) is never emptied.
RUN_ENTRIES = (
    "config.yaml",
    "checkpoints",
    "train_log.jsonl",
    "metrics.json",
    "tokenizer.json",
    "wandb",
    "hf_model",
    "results.json",
    "results.csv",
    "start.json",
)

_ABSENT = "<absent>"


def claim_run_dir(cfg: DictConfig, run_dir: Path, write: bool = True) -> None:
    """Refuse a rerun that would mix two runs in ``run_dir``; with ``overwrite=true`` (and
    ``write``: the rank that writes files) empty a folder that holds a run first."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if cfg.get("overwrite", False):
        _check_only_run_entries(run_dir)
        if write:
            _empty(run_dir)
        return
    if not cfg.resume:
        raise ConfigError(
            f"hydra.run.dir={run_dir} already holds a run: resume=true continues it, "
            "overwrite=true replaces it"
        )
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"hydra.run.dir={run_dir} is not empty but holds no config.yaml to resume from; "
            "pick an empty folder (or overwrite=true if it is an old run)"
        )
    diffs = config_diff(_load_saved(saved), OmegaConf.to_container(cfg, resolve=True))
    if diffs:
        listed = "; ".join(f"{k}: {old} (saved) vs {new} (now)" for k, old, new in diffs)
        raise ConfigError(
            f"hydra.run.dir={run_dir} holds a run with another config ({listed}); "
            "use another folder, or overwrite=true to replace that run"
        )


def config_diff(saved: Any, now: Any) -> list[tuple[str, str, str]]:
    """(dotted key, saved value, new value) for every run-defining key that differs."""
    old, new = _flatten(saved), _flatten(now)
    out = []
    for key in sorted(set(old) | set(new)):
        if is_resumable(key):
            continue
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        same_kind = type(a) is type(b) or {type(a), type(b)} <= {int, float}  # 1 == 1.0
        if a != b or not same_kind:
            out.append((key, _show(a), _show(b)))
    return out


def is_resumable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def require_finished(path: Path, key: str) -> None:
    """A run folder given as ``key`` must be complete (``metrics.json``); a checkpoint folder
    named explicitly (``<run>/checkpoints/step_N``) is taken as asked."""
    path = Path(path)
    if (path / "state.json").is_file() or not (path / "checkpoints").is_dir():
        return  # a checkpoint folder, or not a run at all (the loader names what is missing)
    if not (path / "metrics.json").is_file():
        raise ConfigError(
            f"{key}={path} is an unfinished run (no metrics.json); finish it, or name one of "
            f"its checkpoints explicitly ({key}={path}/checkpoints/step_<N>)"
        )


def check_start(run_dir: Path, key: str, ckpt: Path) -> dict[str, Any] | None:
    """Resume a fine-tuning run only from the weights it started from.

    ``key=<run>`` names the same folder after that run was trained again; its config alone
    cannot tell, so the first start records the checkpoint's weights sha256 in ``start.json``
    (``record_start``, with the other files) and every rerun compares it. Returns what to
    record, or None when the folder already records the same start."""
    from sparselm.loading import weights_sha256

    file = Path(run_dir) / "start.json"
    now = {"checkpoint": str(ckpt), "weights_sha256": weights_sha256(ckpt)}
    if file.is_file():
        try:
            saved = json.loads(file.read_text())[key]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{file}: unreadable; overwrite=true starts the run again") from None
        if saved.get("weights_sha256") != now["weights_sha256"]:
            raise ConfigError(
                f"{key}: the weights at {ckpt} (sha256 {now['weights_sha256'][:12]}) are not "
                f"those this run started from ({saved.get('checkpoint')}, sha256 "
                f"{str(saved.get('weights_sha256'))[:12]}); use another folder, or overwrite=true"
            )
        return None
    return {key: now}


def record_start(run_dir: Path, start: dict[str, Any] | None) -> None:
    if start is not None:
        write_json_atomic(Path(run_dir) / "start.json", start)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): node}


def _show(value: Any) -> str:
    return value if value is _ABSENT else repr(value)


def _load_saved(path: Path) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OmegaConfBaseException, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{path}: unreadable ({first}); overwrite=true replaces that run"
        ) from None


def _check_only_run_entries(run_dir: Path) -> None:
    strange = sorted(
        p.name for p in run_dir.iterdir() if p.name.removesuffix(".tmp") not in RUN_ENTRIES
    )
    if strange:
        raise ConfigError(
            f"overwrite=true: hydra.run.dir={run_dir} holds {strange[0]!r}, which no job "
            "writes; not deleting a folder that may not be a run (empty it by hand)"
        )


def _empty(run_dir: Path) -> None:
    for p in run_dir.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# ---------------------------------------------------------------- one pipeline per results folder

LOCK_FILE = ".sparselm.lock"
_held: list[TextIO] = []  # open lock files: the lock lasts as long as this process


def lock_results_dir(results: Path) -> None:
    """Hold an exclusive lock on ``<results>/.sparselm.lock`` until this process exits.

    Snakemake locks its working directory, so two checkouts sharing one ``results_dir`` would
    otherwise run the same jobs at once. The lock is ``flock``: the kernel drops it when its
    holder exits, however it dies, so a stale lock never blocks; the file's text (pid, host,
    time) only names the holder. On a filesystem without locks this warns and goes on.
    """
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / LOCK_FILE
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "holder unknown"
        f.close()
        raise ConfigError(
            f"results_dir={results} is in use by another pipeline ({holder}); wait for it, "
            "or give this one another results_dir"
        ) from None
    except OSError as e:
        f.close()
        print(f"warning: {path}: cannot lock ({e}); not guarded against a second pipeline",
              file=sys.stderr)  # fmt: skip
        return
    f.seek(0)
    f.truncate()
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
    f.flush()
    _held.append(f)

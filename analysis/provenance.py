"""What every report states of its origin: under its title, the scale and the code that produced
it; under *Provenance*, the machines its training runs ran on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

# "_Scale `tiny` · code at commit `0123abc`._" (the publisher reads the scale back from it)
STAMP = re.compile(r"^_Scale `(?P<scale>[^`]+)` · code at commit `(?P<commit>[^`]+)`")


def code_commit(repo: Path | None = None) -> str:
    """The checkout's short commit, ``+changes`` when the tree differs from it, else ``unknown``."""
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        sha = _git(cwd, "rev-parse", "--short=12", "HEAD")
        dirty = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+changes" if dirty else sha


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def stamp(scale: str | None) -> str:
    commit = code_commit()
    legend = " (`+changes`: with uncommitted edits)" if commit.endswith("+changes") else ""
    return f"_Scale `{scale or 'unstated'}` · code at commit `{commit}`{legend}._"


def read_stamp(report: Path) -> dict[str, str] | None:
    """The scale and commit a generated report states, or None if it states none."""
    for line in report.read_text().splitlines()[:6]:
        match = STAMP.match(line)
        if match:
            return match.groupdict()
    return None


def with_stamp(text: str, scale: str | None) -> str:
    """``text`` with the stamp inserted after its title line."""
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{stamp(scale)}\n{rest}"


def machines_line(results_dir: Path) -> str:
    """Which machines the study's training runs ran on, from each ``metrics.json``'s
    ``environment`` (``sparselm.environment``), with how many runs each."""
    counts: dict[str, int] = {}
    for path in sorted(results_dir.rglob("metrics.json")):
        data = json.loads(path.read_text())
        if "final_train_loss" not in data:  # scoring jobs record no training environment
            continue
        env = data.get("environment")
        key = (
            f"{env['cpu']}, accelerator {env['accelerator']}, torch {env['torch']}, "
            f"{env['threads']} thread(s) x {env['world_size']} rank(s)"
            if isinstance(env, dict)
            else "not recorded (made before runs recorded it)"
        )
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "Training runs' machines: none found."
    shown = "; ".join(f"{key}: {n} run(s)" for key, n in counts.items())
    return (
        f"Training runs' machines ({results_dir}/**/metrics.json, `environment`): {shown}. "
        "Another CPU or GPU rounds differently: a rerun there moves losses in the third "
        "decimal, and a verdict whose interval ends near its tolerance can change "
        "(docs/measurements.md)."
    )

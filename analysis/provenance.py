"""The line every report carries under its title: the scale and the code that produced it."""

from __future__ import annotations

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

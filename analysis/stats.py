"""Seed statistics: mean and a Student-t 95 % confidence interval, and how to print them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """(mean, CI half-width, n) over the finite values; the half-width is NaN when n < 2.

    Student t because a study has a handful of seeds, where the normal interval is too narrow.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, n
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem, n


def summarize(frame: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Columns ``by + [mean, ci95, n]``: one row per group, statistics over its rows (seeds)."""
    rows = []
    for key, group in frame.groupby(list(by), sort=True, dropna=False):
        mean, ci, n = mean_ci(group[value])
        rows.append([*(key if isinstance(key, tuple) else (key,)), mean, ci, n])
    return pd.DataFrame(rows, columns=[*by, "mean", "ci95", "n"])


def format_mean_ci(mean: float, ci: float, n: int, digits: int = 2) -> str:
    """``"27.31 ± 0.42"``; with one seed there is no interval, so ``"27.31 (n=1)"``."""
    if n == 0 or not math.isfinite(mean):
        return "–"
    if n < 2 or not math.isfinite(ci):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def cell(fmt: str) -> Callable[[float], str]:
    """A table cell formatter: ``fmt`` of a number, ``–`` for a missing one."""
    return lambda x: "–" if pd.isna(x) else fmt.format(x)


def mean_ci_cells(table: pd.DataFrame, prefix: str, digits: int = 2, unit: str = "") -> list[str]:
    """The ``<prefix>_mean/_ci95/_n`` columns as ``format_mean_ci`` text, ``unit`` after the
    mean (``1.02× ± 0.01``)."""
    cols = table[[f"{prefix}_mean", f"{prefix}_ci95", f"{prefix}_n"]].itertuples(index=False)
    out = []
    for mean, ci, n in cols:
        text = format_mean_ci(mean, ci, 0 if pd.isna(n) else int(n), digits)
        out.append(text if text == "–" or not unit else text.replace(" ", f"{unit} ", 1))
    return out


def delta_cells(
    table: pd.DataFrame, prefix: str, reference: str, digits: int, scale: float = 1.0
) -> list[str]:
    """A paired difference ``<prefix>_delta_mean/_ci95`` per ``variant`` row as ``+0.271 ±
    0.050`` (``+0.271`` without an interval); the reference row reads ``reference``."""
    out = []
    cols = ["variant", f"{prefix}_delta_mean", f"{prefix}_delta_ci95"]
    for variant, mean, ci in table[cols].values:
        if variant == reference:
            out.append("reference")
        elif pd.isna(mean):
            out.append("–")
        else:
            interval = "" if pd.isna(ci) else f" ± {ci * scale:.{digits}f}"
            out.append(f"{mean * scale:+.{digits}f}{interval}")
    return out

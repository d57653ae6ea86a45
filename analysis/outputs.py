"""Write tables (CSV + Markdown) and figures (PNG + PDF + the plotted data as CSV)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# No dates in the files: rerunning on the same results gives byte-identical PDFs
PDF_METADATA = {"CreationDate": None, "ModDate": None}


def write_table(numbers: pd.DataFrame, shown: pd.DataFrame, stem: str, out_dir: Path) -> list[Path]:
    """``<stem>.csv`` keeps full-precision numbers; ``<stem>.md`` is the rounded, readable view."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    numbers.to_csv(csv, index=False)
    # disable_numparse: keep our rounding ("6.000e+12"), tabulate would re-render it
    empty = "_no rows: the runs behind this table were not part of this scale's grid_"
    text = shown.to_markdown(index=False, disable_numparse=True) if not shown.empty else empty
    md.write_text(text + "\n")
    return [csv, md]


def write_outputs(kind: str, made: dict[str, tuple], out_dir: Path) -> list[Path]:
    """Every table (stem -> numbers, Markdown view) or figure (stem -> figure, plotted numbers)
    of ``made`` into ``out_dir``."""
    write = write_table if kind == "tables" else save_figure
    return [path for stem, pair in made.items() for path in write(*pair, stem, out_dir)]


def save_figure(fig: Figure, data: pd.DataFrame, stem: str, out_dir: Path) -> list[Path]:
    """``<stem>.png``, ``<stem>.pdf`` and ``<stem>.csv`` (the exact numbers plotted)."""
    # Agg canvas, not pyplot: no display, no global figure registry to leak figures into
    FigureCanvasAgg(fig)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{ext}" for ext in ("png", "pdf", "csv")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata=PDF_METADATA)
    data.to_csv(paths[2], index=False)
    return paths

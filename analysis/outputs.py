"""Write tables (CSV + Markdown) and figures (PNG + PDF + the plotted data as CSV)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def outputs_main(
    argv: Sequence[str] | None,
    doc: str,
    study: str,
    kind: str,
    make: Callable[[Any, Path], dict[str, tuple[Any, pd.DataFrame]]],
    runs: Callable[[Path], Any] | None = None,
) -> int:
    """The command line of a study's tables or figures module: ``--study`` (default: the
    module's own; another declared study that reuses it), ``--results`` (default
    results/<study>) and ``--out`` (default <results>/<kind>). ``runs`` (default: the variant
    runs ``analysis.collect`` reads) is read once and handed to ``make(runs, results)``, which
    returns every output by its stem: a table's (numbers, Markdown view) or a figure's (figure,
    plotted numbers). The stems must be the ones the study's declaration names, the names its
    rules and report use. One error line when it finds no run."""
    from analysis.collect import collect_variants  # collect imports pandas-heavy readers
    from analysis.study_declaration import load_declaration

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--study", default=study, help="a declared study whose analysis this is")
    parser.add_argument("--results", type=Path, default=None, help="default: results/<study>")
    parser.add_argument("--out", type=Path, default=None, help=f"default: <results>/{kind}")
    args = parser.parse_args(argv)
    study, results = args.study, args.results or Path(f"results/{args.study}")
    found = runs(results) if runs else collect_variants(results, study)
    if len(found) == 0:
        print(f"{study}_{kind}: no metrics.json found under {results}", file=sys.stderr)
        return 1
    made, declared = make(found, results), getattr(load_declaration(study), kind)
    if set(made) != set(declared):  # a code error: the declaration names every output
        raise ValueError(f"{study}_{kind} makes {sorted(made)}; declared: {sorted(declared)}")
    write = write_table if kind == "tables" else save_figure
    for stem, (first, second) in made.items():
        for path in write(first, second, stem, args.out or results / kind):
            print(path)
    return 0

"""Refresh the committed reference reports (``reports/``) from a finished study run.

``python -m analysis.publish_reports [--scale tiny] [--studies spdf ...]`` copies
``results/reports/<study>.md`` and its figures into ``reports/``, rewriting the report's links
so they still point at the same files. The study rules never write ``reports/`` themselves, so a
fresh clone reruns every job; a report made at another scale than ``--scale`` is refused.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.provenance import read_stamp
from analysis.study_declaration import declared_studies

STUDIES = tuple(declared_studies())  # pipelines/studies/<study>.yaml
REFERENCE_SCALE = "tiny"
# a Markdown link or image target that is a relative path
LINK = re.compile(r"(\]\()(?!https?://|/|#)([^)\s]+)(\))")


class PublishError(Exception):
    """A report that cannot be published, in one line."""


def relink(text: str, source_dir: Path, target_dir: Path) -> str:
    """Rewrite relative links written for ``source_dir`` so they resolve from ``target_dir``;
    links into the report's own folder (its figures, copied along) stay as they are."""

    def move(match: re.Match[str]) -> str:
        if not match.group(2).startswith("../"):
            return match.group(0)
        absolute = os.path.normpath(source_dir / match.group(2))
        moved = Path(os.path.relpath(absolute, target_dir)).as_posix()
        return f"{match.group(1)}{moved}{match.group(3)}"

    return LINK.sub(move, text)


def publish_report(study: str, generated: Path, target: Path, scale: str) -> Path:
    """Copy one generated report (and its ``<study>_figures/``) into ``target``."""
    source = generated / f"{study}.md"
    if not source.is_file():
        raise PublishError(f"{source} does not exist: run `snakemake reproduce_{study}` first")
    stamp = read_stamp(source)
    if stamp is None:
        raise PublishError(f"{source} states no scale; regenerate it with the study rules")
    if stamp["scale"] != scale:
        raise PublishError(
            f"{source} was made at scale {stamp['scale']}, not {scale}; the reference reports "
            f"stay at {scale} (pass --scale {stamp['scale']} to publish it anyway)"
        )
    target.mkdir(parents=True, exist_ok=True)
    figures = f"{study}_figures"
    if (generated / figures).is_dir():
        shutil.rmtree(target / figures, ignore_errors=True)
        shutil.copytree(generated / figures, target / figures)
    out = target / f"{study}.md"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(relink(source.read_text(), source.parent.resolve(), target.resolve()))
    os.replace(tmp, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=Path, default=Path("results/reports"))
    parser.add_argument("--to", type=Path, default=Path("reports"))
    parser.add_argument("--scale", default=REFERENCE_SCALE)
    parser.add_argument("--studies", nargs="+", choices=STUDIES, help="default: every one made")
    args = parser.parse_args(argv)
    studies = args.studies or [s for s in STUDIES if (args.generated / f"{s}.md").is_file()]
    try:
        if not studies:
            raise PublishError(f"no study report under {args.generated}: run a reproduce_* target")
        for study in studies:
            print(publish_report(study, args.generated, args.to, args.scale))
    except PublishError as err:
        print(f"publish_reports: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

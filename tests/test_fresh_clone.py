"""On a fresh clone nothing of a study is done yet: every reproduce_* target schedules its whole
DAG (the committed reference reports in reports/ are not any rule's output), and publishing
a report refuses one made at another scale."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.provenance import read_stamp, with_stamp
from analysis.publish_reports import main as publish_main
from analysis.study_declaration import declared_studies, load_declaration

ROOT = Path(__file__).resolve().parents[1]
TARGETS = [f"reproduce_{study}" for study in declared_studies()]
TINY = {study: load_declaration(study).grids["tiny"] for study in declared_studies()}


def _fresh_checkout(dest: Path) -> Path:
    """The files a clone of this tree holds (tracked and new, not ignored), nothing else."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


# A fresh clone builds its DAG from its own code: a sparselm installed elsewhere (this tree's
# editable install, here) is refused, as if Snakemake ran from an env without the package.
ONLY_THE_CLONE = """
import importlib.machinery
import sys

CLONE = {clone!r}


class _OnlyTheClone:
    def find_spec(self, name, path=None, target=None):
        if name != "sparselm":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not str(spec.origin).startswith(CLONE):
            raise ImportError("sparselm is importable only from the clone")
        return spec


sys.meta_path.insert(0, _OnlyTheClone())
"""


def _job_counts(checkout: Path, data_dir: Path, *extra: str) -> dict[str, int]:
    site = checkout.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(ONLY_THE_CLONE.format(clone=str(checkout)))
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(site),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--nolock",
            *TARGETS,
            *extra,
            "--config",
            f"data_dir={data_dir}",
        ],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", stats, flags=re.M))
    return {rule: int(n) for rule, n in counts.items() if rule != "total"}


@pytest.mark.slow
def test_every_reproduce_target_schedules_its_whole_dag_on_a_fresh_clone(data_dir, tmp_path):
    checkout = _fresh_checkout(tmp_path / "clone")
    assert not (checkout / "results").exists()
    assert all((checkout / "reports" / f"{t.split('_', 1)[1]}.md").is_file() for t in TARGETS)
    plain = _job_counts(checkout, data_dir)
    forced = _job_counts(checkout, data_dir, "--forceall")
    assert plain == forced  # nothing counts as done, and nothing is left out
    for target in TARGETS:
        assert plain[target] == 1 and plain[target.replace("reproduce", "report")] == 1
    assert sum(plain.values()) > 100  # the five tiny studies, not a handful of report jobs
    # every study's pre-training runs go through the one pretrain rule: SPDF's 9 (SquareHead's
    # teachers start from three of them) and every variant x seed of the variant grids
    variants = sum(
        len(TINY[s]["variants"]) * len(TINY[s]["seeds"]) for s in ("raptr", "mst", "compare")
    )
    assert plain["pretrain"] == 9 + variants == 9 + 18 + 15 + 15
    assert plain["eval_nlg"] == 18  # SPDF: 18 fine-tuned E2E models scored


def _generated(tmp_path: Path, scale: str) -> Path:
    generated = tmp_path / "results" / "reports"
    (generated / "spdf_figures").mkdir(parents=True)
    (generated / "spdf_figures" / "fig.png").write_bytes(b"png")
    text = "# SPDF report\n\n[table](../spdf/tables/t.csv) ![fig](spdf_figures/fig.png)\n"
    (generated / "spdf.md").write_text(with_stamp(text, scale))
    return generated


def test_publish_copies_a_tiny_report_and_keeps_its_links_true(tmp_path):
    generated = _generated(tmp_path, "tiny")
    target = tmp_path / "reports"
    assert publish_main(["--generated", str(generated), "--to", str(target)]) == 0
    text = (target / "spdf.md").read_text()
    assert "[table](../results/spdf/tables/t.csv)" in text
    assert "![fig](spdf_figures/fig.png)" in text and (target / "spdf_figures/fig.png").is_file()
    assert read_stamp(target / "spdf.md")["scale"] == "tiny"


def test_publish_refuses_a_report_of_another_scale(tmp_path, capsys):
    generated = _generated(tmp_path, "smoke")
    target = tmp_path / "reports"
    target.mkdir()
    (target / "spdf.md").write_text("reference\n")
    assert publish_main(["--generated", str(generated), "--to", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert "scale smoke, not tiny" in err and "\n" not in err
    assert (target / "spdf.md").read_text() == "reference\n"


def test_committed_reports_state_their_scale_and_commit():
    for study in ("spdf", "raptr", "squarehead", "mst"):
        stamp = read_stamp(ROOT / "reports" / f"{study}.md")
        assert stamp is not None and stamp["scale"] == "tiny", study
        assert re.fullmatch(r"[0-9a-f]{7,40}(\+changes)?", stamp["commit"]), study

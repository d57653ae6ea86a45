"""The study engine: each study is a declaration (pipelines/studies/<study>.yaml) run by the
rules every study shares. The recorded DAGs pin what each scale's studies run, so a change to
the shared rules that changes a job's command fails here (update the record on purpose with
SPARSELM_RECORD_DAG=1 and say why in the commit)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_pipeline import ROOT, snakemake

from analysis.report_engine import ReportInputError
from analysis.study_declaration import STUDIES_DIR, declared_studies, load_declaration

RECORDS = ROOT / "tests" / "fixtures" / "dag"
RECORDED = ROOT / "tests" / "fixtures" / "study_tables" / "results"  # smoke jobs' files
TRIO = ("dense", "static", "rigl")
TARGETS = [f"reproduce_{study}" for study in declared_studies()]


def test_the_five_studies_are_declared_with_their_analysis_modules():
    assert declared_studies() == ["compare", "mst", "raptr", "spdf", "squarehead"]
    for study in declared_studies():
        declared = load_declaration(study)
        assert declared.tables and declared.figures, study
        for kind in ("tables", "figures", "report"):
            assert importlib.util.find_spec(f"analysis.{study}_{kind}") is not None, (study, kind)


def test_a_report_has_a_section_per_declared_table_and_figure_in_declared_order(tmp_path):
    from analysis.report_engine import Report, StudyFiles, render_report, study_files

    declared = load_declaration("compare")
    results = tmp_path / "compare"
    (results / "tables").mkdir(parents=True)
    (results / "figures").mkdir()
    (results / "tables" / "runs.csv").write_text("stage,metric,value,source\n")
    for stem in declared.tables:
        (results / "tables" / f"{stem}.md").write_text(f"| table {stem} |\n")
        (results / "tables" / f"{stem}.csv").write_text("variant\ndense\n")
    for stem in declared.figures:
        (results / "figures" / f"{stem}.png").write_bytes(b"png")
    files = StudyFiles(**study_files("compare", results))
    report = Report("T", "compare", "spec", what_was_run=[], claims=[], caveats=[], provenance=[])
    text = render_report(report, files, tmp_path / "out.md")
    sections = [*declared.tables.values(), *declared.figures.values()]
    positions = [text.index(title) for title in sections]
    assert positions == sorted(positions)
    assert all(f"| table {stem} |" in text for stem in declared.tables)
    (results / "figures" / f"{next(iter(declared.figures))}.png").unlink()
    with pytest.raises(ReportInputError, match="compare_figures"):
        study_files("compare", results)


def test_a_report_names_the_machines_its_training_runs_ran_on(tmp_path):
    import json

    from analysis.provenance import machines_line

    env = {"cpu": "CPU X", "accelerator": "none", "torch": "2.13.0", "python": "3.11",
           "threads": 1, "world_size": 1}  # fmt: skip
    runs = {
        "pretrain/a_seed0": {"final_train_loss": 6.0, "environment": env},
        "pretrain/a_seed1": {"final_train_loss": 6.1, "environment": env},
        "pretrain/b_seed0": {"final_train_loss": 6.2},  # made before runs recorded it
        "eval_zeroshot/a_seed0": {"lambada/acc": 0.1},  # scoring: not a training run
    }
    for name, metrics in runs.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    line = machines_line(tmp_path)
    assert "CPU X, accelerator none, torch 2.13.0, 1 thread(s) x 1 rank(s): 2 run(s)" in line
    assert "not recorded (made before runs recorded it): 1 run(s)" in line
    assert line.count("run(s)") == 2


def test_a_writer_makes_exactly_the_declared_outputs(tmp_path, monkeypatch):
    import pandas as pd

    from analysis import build, compare_tables

    table = pd.DataFrame({"x": [1.0]})
    declared = {stem: (table, table) for stem in load_declaration("compare").tables}
    monkeypatch.setattr(build, "read_runs", lambda *_: table)  # any non-empty runs table
    monkeypatch.setattr(compare_tables, "make_tables", lambda *_: declared)
    argv = ["tables", "--study", "compare", "--results", str(tmp_path)]
    assert build.main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{stem}.{ext}" for stem in declared for ext in ("csv", "md")
    )
    renamed = {"compare_table_typo": next(iter(declared.values()))}
    monkeypatch.setattr(compare_tables, "make_tables", lambda *_: renamed)
    with pytest.raises(ValueError, match="compare_table_typo"):
        build.main([*argv, "--out", str(tmp_path / "typo")])
    assert not (tmp_path / "typo").exists()  # nothing written for a run it refuses


def test_one_command_refuses_what_it_cannot_build_in_one_line(tmp_path, capsys):
    from analysis import build

    empty = ["--study", "raptr", "--results", str(tmp_path)]
    for kind in ("runs", "tables", "figures", "report"):
        assert build.main([kind, *empty, "--out", str(tmp_path / "out")]) == 1, kind
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("raptr_"), (kind, error)
        if kind in ("tables", "figures"):  # made from the runs table, which is built first
            assert error[0].endswith("python -m analysis.build runs --study raptr"), error
    assert not any(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(SystemExit):  # a report's option is no table's
        build.main(["tables", *empty, "--high-sparsity", "0.7"])
    assert "unrecognized arguments: --high-sparsity 0.7" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a report's own options are in its help
        build.main(["report", "--study", "squarehead", "--help"])
    assert "--high-sparsity HIGH_SPARSITY" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build.main(["tables", "--study", "nosuchstudy"])
    assert "invalid choice: 'nosuchstudy'" in capsys.readouterr().err


def test_a_bad_declaration_fails_in_one_line_naming_file_and_key(tmp_path):
    shutil.copy(ROOT / "pipelines/studies/schema.yaml", tmp_path)
    good = yaml.safe_load((ROOT / "pipelines/studies/raptr.yaml").read_text())
    (tmp_path / "raptr.yaml").write_text(yaml.safe_dump(good | {"layout": "grid"}))
    with pytest.raises(ValueError) as error:
        load_declaration("raptr", tmp_path)
    message = str(error.value)
    assert "raptr.yaml" in message and "key layout" in message and "\n" not in message
    with pytest.raises(ValueError, match="no study declaration"):
        load_declaration("nosuch", tmp_path)


def dag_commands(scale: str, data_dir: Path, tmp_path: Path) -> list[str]:
    """Every job's shell command of every study at ``scale``, paths made machine-independent."""
    results = tmp_path / "results"
    proc = snakemake(
        *TARGETS, "-n", "-p", "--config", f"scale={scale}", f"data_dir={data_dir}",
        f"results_dir={results}", data_dir=data_dir,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    prefix = "Shell command: "
    lines = [line[len(prefix) :] for line in proc.stdout.splitlines() if line.startswith(prefix)]
    return sorted(
        line.replace(str(results), "RESULTS").replace(str(data_dir), "DATA") for line in lines
    )


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["smoke", "tiny"])
def test_every_study_schedules_the_recorded_jobs(scale, data_dir, tmp_path):
    commands = dag_commands(scale, data_dir, tmp_path)
    record = RECORDS / f"{scale}.txt"
    if os.environ.get("SPARSELM_RECORD_DAG") == "1":
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("\n".join(commands) + "\n")
    expected = record.read_text().splitlines()
    missing, extra = sorted(set(expected) - set(commands)), sorted(set(commands) - set(expected))
    assert not missing and not extra, f"not scheduled: {missing[:3]}; new: {extra[:3]}"
    assert len(commands) == len(expected)


@pytest.mark.slow
def test_a_configfile_overrides_one_scale_of_a_declared_grid(data_dir, tmp_path):
    """The grids live in the declarations; a --configfile changes one scale's and keeps the
    rest (here: RaPTr's smoke seeds), as the docs promise."""
    override = tmp_path / "more_seeds.yaml"
    override.write_text(yaml.safe_dump({"raptr": {"grids": {"smoke": {"seeds": [0, 1]}}}}))
    results = tmp_path / "results"
    args = ("-n", "--config", "scale=smoke", f"data_dir={data_dir}", f"results_dir={results}")
    proc = snakemake("reproduce_raptr", *args, "--configfile", str(override), data_dir=data_dir)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    variants = load_declaration("raptr").grids["smoke"]["variants"]
    pretrain = re.search(r"^pretrain\s+(\d+)$", proc.stdout, re.MULTILINE)
    assert pretrain is not None and int(pretrain.group(1)) == 2 * len(variants)
    assert "seed1" in proc.stdout  # the second seed's runs, with the grid's other keys kept


def trio_checkout(tmp_path: Path) -> Path:
    """A copy of the checkout with one more declaration, ``trio`` (dense, static sparse and
    RigL at the smoke scale), that reuses the comparison study's analysis."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("Snakefile", "environment.yml", "pipelines", "analysis", "src", "conf"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__py*"))
        else:
            shutil.copy(ROOT / name, checkout / name)
    (checkout / "pipelines" / "studies" / "trio.yaml").write_text(yaml.safe_dump(trio()))
    return checkout


def trio() -> dict:
    """The declaration of ``trio``: the comparison study's smoke grid less three variants."""
    compare = load_declaration("compare")
    smoke = compare.grids["smoke"]
    return {
        "title": "Trio: dense, static sparse and RigL",
        "spec": "pipelines/studies/trio.yaml",
        "label": "Trio",
        "layout": "variant",
        "analysis": "compare",
        "tables": compare.tables,
        "figures": compare.figures,
        "grid_requires": {"variants": ["dense"]},
        "grids": {
            "smoke": smoke | {"variants": {v: smoke["variants"][v] for v in TRIO}},
        },
    }


def trio_runs(study: Path) -> Path:
    """The comparison study's recorded smoke jobs of trio's variants, as trio's runs."""
    for variant in TRIO:
        run = f"{variant}_seed0"
        shutil.copytree(RECORDED / "compare" / "pretrain" / run, study / "pretrain" / run)
    return study


def build_trio_report(checkout: Path, tmp_path: Path) -> str:
    """Trio's runs table, tables, figures and report, made from its runs; the report's text."""
    study = trio_runs(tmp_path / "results" / "trio")
    out = tmp_path / "reports" / "trio.md"
    for args in (
        ["analysis.build", "runs", "--study", "trio"],
        ["analysis.build", "tables", "--study", "trio"],
        ["analysis.build", "figures", "--study", "trio"],
        ["analysis.build", "report", "--study", "trio", "--out", str(out)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *args, "--results", str(study)],
            cwd=checkout, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(study / "tables" / "compare_table_main.csv")
    assert list(table["variant"]) == list(TRIO)
    return out.read_text()


def test_a_study_that_reuses_another_studys_analysis_is_one_declaration(data_dir, tmp_path):
    """``trio`` is one declaration file: the pipeline schedules its runs and analysis, and its
    report, with the comparison study's claims, is made from its runs."""
    checkout = trio_checkout(tmp_path)
    results = tmp_path / "results"
    proc = snakemake(
        "reproduce_trio", "-n", "-p", "--config", "scale=smoke", f"data_dir={data_dir}",
        f"results_dir={results}", data_dir=data_dir, cwd=checkout,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    for kind in ("tables", "figures", "report"):
        assert (
            f"python -m analysis.build {kind} --study trio --results {results}/trio" in proc.stdout
        )
    for variant in TRIO:
        assert f"logger.name=pretrain-{variant}-seed0 " in proc.stdout, variant

    text = build_trio_report(checkout, tmp_path)
    assert text.startswith("# Trio: dense, static sparse and RigL — reproduction report")
    assert "`python -m analysis.build report --study trio` from files under results/trio" in text
    assert "| (a) static reaches a lower val loss than dense at equal training FLOPs |" in text


TRIO_CLAIMS = '''"""Trio's own question about the comparison study's tables."""

from analysis.verdicts import Claim, Interval, at_most


def report_claims(inputs):
    runs = inputs.per_run.set_index(["variant", "seed"])["final_val_loss"]
    delta = (runs["rigl"] - runs["static"]).dropna()
    interval = Interval.of(delta.tolist())
    statement = "rigl ends at or below static's final val loss"
    return [Claim("a", statement, at_most(interval, 0.0), interval.text(3, " nats"))]
'''


def test_a_reusing_study_asks_its_own_questions_with_a_claims_module_alone(tmp_path):
    """``trio`` plus ``analysis/trio_claims.py``: the report keeps the comparison study's
    tables and figures and carries trio's claims instead of the comparison study's."""
    checkout = trio_checkout(tmp_path)
    (checkout / "analysis" / "trio_claims.py").write_text(TRIO_CLAIMS)
    text = build_trio_report(checkout, tmp_path)
    assert "| (a) rigl ends at or below static's final val loss | INCONCLUSIVE |" in text  # n=1
    assert "at equal training FLOPs" not in text  # the comparison study's claims are gone
    assert "## Comparison: final val loss" in text and "![Val loss vs cumulative" in text


def test_wandb_rebuilds_a_reusing_studys_tables_as_its_files_do(tmp_path, monkeypatch):
    """``analysis.wandb_compare`` reads the study's declaration: trio's W&B runs (recorded from
    its jobs' files) give every table its files give, by the comparison study's functions, and
    its command line writes them all."""
    from helpers import RecordedRun

    from analysis import collect, compare_tables, study_runs, wandb_compare

    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(STUDIES_DIR / "schema.yaml", studies / "schema.yaml")
    (studies / "trio.yaml").write_text(yaml.safe_dump(trio()))
    results = trio_runs(tmp_path / "trio")
    runs = [RecordedRun(results / "pretrain" / f"{v}_seed0", "pretrain") for v in TRIO]
    made, n_runs = wandb_compare.study_outputs(
        wandb_compare.study_declaration("trio", studies), runs
    )
    from_wandb = made["tables"]
    frame = collect.collect_variants(results)
    from_files = compare_tables.make_tables(frame, study_runs.from_files(results, "variant"))
    assert n_runs == len(TRIO) and list(from_wandb) == list(trio()["tables"])
    assert list(from_wandb["compare_table_main"][0]["variant"]) == list(TRIO)
    for stem, (numbers, shown) in from_files.items():
        pd.testing.assert_frame_equal(from_wandb[stem][0], numbers)
        pd.testing.assert_frame_equal(from_wandb[stem][1], shown)

    monkeypatch.setattr(wandb_compare, "STUDIES_DIR", studies)
    monkeypatch.setattr(wandb_compare, "fetch_runs", lambda *_: runs)
    out = tmp_path / "from_wandb"
    args = ["--entity", "e", "--group", "trio", "--out", str(out), "--figures"]
    assert wandb_compare.main(args) == 0
    written = sorted(p.name for p in out.iterdir())
    figures = [f"{stem}.{ext}" for stem in trio()["figures"] for ext in ("csv", "pdf", "png")]
    tables = [f"{stem}.{ext}" for stem in from_files for ext in ("csv", "md")]
    assert written == sorted(tables + figures)


def test_wandb_names_a_study_it_cannot_rebuild_in_one_line(tmp_path):
    from analysis import wandb_compare

    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(STUDIES_DIR / "schema.yaml", studies / "schema.yaml")
    (studies / "fifth.yaml").write_text(yaml.safe_dump(trio() | {"analysis": "fifth"}))
    with pytest.raises(wandb_compare.WandbUnavailable, match=r"'fifth'.*analysis.fifth_tables"):
        wandb_compare.study_declaration("fifth", studies)
    with pytest.raises(wandb_compare.WandbUnavailable, match=r"'nope' is not a declared study"):
        wandb_compare.study_declaration("nope", studies)

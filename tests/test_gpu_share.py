"""GPU jobs claim a share of the one GPU the local profile offers, sized by the scale."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAINING_JOB = re.compile(r"sparselm\.cli\.(pretrain|finetune|sparse_finetune) ")
SCORING_JOB = re.compile(r"sparselm\.cli\.evaluate ")


def dry_run_jobs(target: str, scale: str, data_dir: Path, tmp: Path) -> list[tuple[str, int]]:
    """(shell command, gpu_share) of every job the local profile would run for ``target``."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "--nolock", target]
    cmd += ["--profile", "pipelines/profiles/local", "--config", f"scale={scale}"]
    cmd += [f"data_dir={data_dir}", f"results_dir={tmp}/results", f"reports_dir={tmp}/reports"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs, share = [], None
    for line in proc.stdout.splitlines():
        found = re.search(r"gpu_share=(\d+)", line)
        if line.lstrip().startswith("resources:"):
            share = int(found.group(1)) if found else None
        elif "python -m " in line:
            jobs.append((line.strip(), share))
            share = None
    return jobs


def test_the_local_profile_offers_one_gpu():
    profile = yaml.safe_load((ROOT / "pipelines/profiles/local/config.yaml").read_text())
    assert "gpu_share=100" in profile["resources"]


@pytest.mark.parametrize(
    ("target", "scale"),
    [("reproduce_spdf", "gpu"), ("reproduce_spdf", "gpu_smoke"), ("reproduce_spdf", "smoke")]
    + [(f"reproduce_{s}", "gpu") for s in ("raptr", "squarehead", "mst", "compare")],
)
def test_every_training_and_scoring_job_claims_the_scales_share(target, scale, data_dir, tmp_path):
    shares = yaml.safe_load((ROOT / "pipelines/config/default.yaml").read_text())["gpu_share"]
    jobs = dry_run_jobs(target, scale, data_dir, tmp_path)
    training = [share for command, share in jobs if TRAINING_JOB.search(command)]
    scoring = [share for command, share in jobs if SCORING_JOB.search(command)]
    assert len(training) >= 3 and len(scoring) >= 3
    assert set(training) == {shares["training"][scale]}
    assert set(scoring) == {shares["scoring"][scale]}
    # data preparation and analysis never wait for the GPU
    other = [s for c, s in jobs if not (TRAINING_JOB.search(c) or SCORING_JOB.search(c))]
    assert other and not any(other)


def test_a_share_over_one_gpu_fails_in_one_line(data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"gpu_share": {"scoring": {"smoke": 150}}}))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--nolock", "reproduce_spdf"]
    cmd += ["--configfile", str(bad), "--config", "scale=smoke", f"data_dir={data_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "gpu_share.scoring.smoke" in proc.stdout + proc.stderr

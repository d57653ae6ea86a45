"""environment.yml is self-contained and pins exactly what requirements.txt + constraints.txt do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from write_environment import main as write_main  # noqa: E402
from write_environment import pins  # noqa: E402


def test_environment_yml_is_generated_from_the_requirements():
    assert write_main(["--check"]) == 0


def test_environment_yml_needs_no_file_beside_it():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert not [line for line in pip if line.startswith("-")]  # no -r / -c / -e path
    assert sorted(pip) == sorted(pins(ROOT / "requirements.txt"))
    assert "torch==2.13.0" in pip


def test_rules_find_the_checkout_without_an_installed_package(tmp_path):
    """The rule environment's PYTHONPATH alone makes `sparselm` importable (conda envs do not
    install the package)."""
    code = "import os; print(os.environ['PYTHONPATH'])"
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        f'configfile: "{ROOT}/pipelines/config/default.yaml"\n'
        f'include: "{ROOT}/pipelines/common.smk"\n'
        f'rule show:\n    output: "out.txt"\n    shell: "python -c \\"{code}\\" > {{output}}"\n'
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "1",
            "-s",
            str(snakefile),
            "show",
            "--config",
            "data_dir=.",
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text().split(":")[0] == str(ROOT / "src")

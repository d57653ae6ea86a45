"""The GPU throughput benchmark: its tiny CPU mode runs every table, its CUDA mode needs a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


def bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_cpu_mode_prints_every_table(tmp_path):
    out = bench("--device", "cpu", "--steps", "1", "--out", str(tmp_path / "r.md"))
    assert out == (tmp_path / "r.md").read_text()
    for needle in ("matmul rate", "| dense |", "| static 75% |", "| RaPTr, path 6/12 |", "2:4"):
        assert needle in out, needle
    static = next(line for line in out.splitlines() if line.startswith("| static 75%"))
    assert "| 2.00x |" in static  # 75% on every block linear halves the toy model's FLOPs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_it_says_so_in_one_line():
    out = bench()
    assert out.count("\n") == 1 and "CUDA is not available" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mode_small():
    out = bench("--batch", "4", "--seq", "256", "--steps", "2", "--warmup", "1", "--no-compile")
    assert "bf16 matmul rate" in out and "| dense |" in out and "cusparselt" in out

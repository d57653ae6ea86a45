"""The 2:4 investigation script: its roofline model, and it runs (or says why not)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "semi_structured.py"


def _load():
    spec = importlib.util.spec_from_file_location("semi_structured", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_roofline_halves_compute_bound_shapes_and_keeps_memory_bound_ones():
    s = _load()
    rate, bw = 1e15, 5e12
    # big square: compute-bound both ways, so a perfect 2:4 kernel is twice as fast
    assert s.roofline_ceiling(16384, 8192, 8192, rate, bw) == pytest.approx(2.0)
    # one token (decoding): weight traffic dominates; 2:4 moves 9/16 of the dense bytes
    one = s.roofline_ceiling(1, 8192, 8192, rate, bw)
    assert one == pytest.approx(
        s.roofline_seconds(1, 8192, 8192, rate, bw, False)
        / ((2 * 8192 + 2 * 8192 + 8192 * 8192 * (1 + 1 / 8)) / bw),
        rel=1e-9,
    )
    assert 1.7 < one < 1.8
    # a thin layer with many tokens: activations dominate, the ceiling falls towards 1
    assert 1.0 < s.roofline_ceiling(10**6, 64, 64, rate, bw) < 1.05


def test_training_gains_at_most_one_and_a_half_from_two_of_three_matmuls():
    s = _load()
    assert s.training_linear_speedup(1.0) == pytest.approx(1.0)
    assert s.training_linear_speedup(2.0) == pytest.approx(1.5)
    assert s.training_linear_speedup(0.25) == pytest.approx(1 / 3)


def test_roofline_only_prints_every_shape(tmp_path):
    out = tmp_path / "r.md"
    text = _run("--roofline-only", "--out", str(out))
    assert text == out.read_text() and "Analytic, not measured" in text
    assert all(f"({m}, {k} -> {n})" in text for _, m, k, n in _load().SHAPES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_it_says_so_in_one_line():
    out = _run()
    assert out.count("\n") == 1 and "CUDA is not available" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_measures_every_shape_in_both_layouts():
    text = _run()
    assert text.count("| linear |") == text.count("| row-major |") == len(_load().SHAPES)
    assert "wrong result" not in text

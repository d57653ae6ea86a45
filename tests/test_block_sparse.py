"""The block-sparse benchmark: exact block masks, and a CPU run that checks the script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "block_sparse.py"


def _load():
    spec = importlib.util.spec_from_file_location("block_sparse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("density", [0.5, 0.25, 0.1])
def test_block_mask_keeps_whole_blocks_of_largest_norm(density):
    bs = _load()
    w = torch.randn(128, 256)
    mask = bs.block_mask(w, 32, density)
    blocks = mask.view(4, 32, 8, 32)
    per_block = blocks.sum(dim=(1, 3))
    assert set(per_block.unique().tolist()) <= {0, 32 * 32}  # every block all kept or all not
    kept = per_block > 0
    assert int(kept.sum()) == round(density * 32)
    norms = w.view(4, 32, 8, 32).norm(dim=(1, 3))
    assert norms[kept].min() >= norms[~kept].max()  # the largest-norm blocks are kept


def test_block_mask_rejects_a_partial_block():
    with pytest.raises(ValueError, match="100x256 is not a whole number of 32x32 blocks"):
        _load().block_mask(torch.randn(100, 256), 32, 0.5)


def test_cpu_run_checks_every_row_against_dense():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--iters", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| small")]
    assert len(rows) == len(_load().BLOCKS) * len(_load().DENSITIES)
    for row in rows:
        err = float(row.strip("| \n").split("|")[-1])
        assert err < 1e-5, row  # BSR and dense agree (fp32)

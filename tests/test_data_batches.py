"""TokenBatches: batches are a pure function of (seed, step, micro); y is x shifted by one."""

import numpy as np
import pytest
import torch

from sparselm.data.batches import TokenBatches
from sparselm.errors import DataError


def make(seed: int = 0, n: int = 10_000, seq_len: int = 32, b: int = 4) -> TokenBatches:
    train = np.arange(n, dtype=np.uint32)  # token value == position: shifts are visible
    val = np.arange(n // 10, dtype=np.uint16)
    return TokenBatches(train, val, seq_len=seq_len, micro_batch_size=b, seed=seed)


def test_shapes_and_shift():
    x, y = make().train_batch(3, 1)
    assert x.shape == y.shape == (4, 32)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)
    assert int(y.max()) <= 9_999


def test_pure_function_of_seed_step_micro():
    a, b = make(seed=7), make(seed=7)
    order = [(0, 0), (5, 1), (2, 0), (5, 0)]
    first = {k: a.train_batch(*k) for k in order}
    for k in reversed(order):  # call order and instance do not matter
        xb, yb = b.train_batch(*k)
        assert torch.equal(first[k][0], xb) and torch.equal(first[k][1], yb)


def test_global_rng_untouched():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    make().train_batch(1, 0)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_different_inputs_differ():
    base = make(seed=0).train_batch(1, 0)[0]
    assert not torch.equal(base, make(seed=1).train_batch(1, 0)[0])
    assert not torch.equal(base, make(seed=0).train_batch(2, 0)[0])
    assert not torch.equal(base, make(seed=0).train_batch(1, 1)[0])


def test_val_batches_fixed_and_seed_independent():
    v0, v1 = make(seed=0).val_batches(3), make(seed=9).val_batches(3)
    assert len(v0) == 3
    for (x0, y0), (x1, y1) in zip(v0, v1, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert torch.equal(y0, x0 + 1)
    assert int(v0[0][0][0, 0]) == 0 and int(v0[-1][1][-1, -1]) == 999  # spans the whole array


def test_short_arrays_rejected():
    with pytest.raises(DataError, match="train split has 32 tokens"):
        TokenBatches(np.arange(32), np.arange(100), 32, 2, 0)
    with pytest.raises(DataError, match="validation split"):
        TokenBatches(np.arange(100), np.arange(10), 32, 2, 0)

"""Language-model batches drawn from flat token arrays.

A training batch is a pure function of (seed, step, micro): it uses its own generator seeded
from those three numbers and never the global RNG. Resuming at step k therefore replays exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import torch

from sparselm.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]


def batch_rng(seed: int, step: int, micro: int) -> np.random.Generator:
    """Independent generator for one micro-batch; SeedSequence hashes the three numbers."""
    if min(seed, step, micro) < 0:
        raise ValueError(f"seed, step and micro must be >= 0, got {(seed, step, micro)}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step, micro])))


def _windows(
    tokens: np.ndarray, starts: np.ndarray, seq_len: int, vocab_size: int | None = None
) -> Batch:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    buf = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    if vocab_size is not None and buf.numel() and int(buf.max()) >= vocab_size:
        # checked per batch (free) rather than by scanning shards of billions of tokens
        where = getattr(tokens, "filename", None) or "a token split"
        raise DataError(
            f"{where}: holds token id {int(buf.max())}, outside the model's vocabulary "
            f"(model.vocab_size={vocab_size}); prepare the corpus again with this tokenizer"
        )
    return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


class TokenBatches:
    """Random training windows and fixed validation windows of `seq_len` tokens."""

    def __init__(
        self,
        train: np.ndarray,
        val: np.ndarray,
        seq_len: int,
        micro_batch_size: int,
        seed: int,
        vocab_size: int | None = None,
    ) -> None:
        """``vocab_size``: refuse (one line naming the file) a window with a larger id."""
        if seq_len < 1 or micro_batch_size < 1:
            raise ValueError(
                f"seq_len and micro_batch_size must be >= 1, got {seq_len}, {micro_batch_size}"
            )
        for name, arr in (("train", train), ("validation", val)):
            if len(arr) < seq_len + 1:
                raise DataError(
                    f"{name} split has {len(arr)} tokens; need at least seq_len + 1 = {seq_len + 1}"
                )
        self.train = train
        self.val = val
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.vocab_size = vocab_size

    def train_batch(self, step: int, micro: int) -> Batch:
        """(x, y) int64 tensors of shape [B, T]; y is x shifted left by one token."""
        rng = batch_rng(self.seed, step, micro)
        high = len(self.train) - self.seq_len  # exclusive: the last window ends at len - 1
        starts = rng.integers(0, high, size=self.micro_batch_size, dtype=np.int64)
        return _windows(self.train, starts, self.seq_len, self.vocab_size)

    def val_batches(self, n_batches: int) -> list[Batch]:
        """`n_batches` batches of evenly spaced windows: the same tokens for every seed."""
        if n_batches < 1:
            raise ValueError(f"n_batches must be >= 1, got {n_batches}")
        last = len(self.val) - self.seq_len - 1
        n = n_batches * self.micro_batch_size
        starts = np.floor(np.linspace(0, last, num=n)).astype(np.int64)
        b = self.micro_batch_size
        return [
            _windows(self.val, starts[i : i + b], self.seq_len, self.vocab_size)
            for i in range(0, n, b)
        ]

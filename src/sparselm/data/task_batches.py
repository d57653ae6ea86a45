"""Fine-tuning batches over context -> completion examples, same protocol as TokenBatches.

Each sequence is `format_prompt(context)` + `format_completion(completion)` + EOT. Labels are
-100 on prompt positions and padding, so the loss covers only the completion and its EOT.
Batch (step, micro) is a pure function of (seed, step, micro): sample number
g = (step * grad_accum + micro) * B + b is read from epoch g // N, whose order is a permutation
seeded by (seed, epoch). Resuming at any step replays the same examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from sparselm.data.batches import Batch
from sparselm.data.tasks import TaskExample, format_completion, format_prompt
from sparselm.errors import ConfigError, DataError
from sparselm.tokenizer import EOT, eot_id

IGNORE_INDEX = -100  # torch cross_entropy's default ignore_index


def subset_indices(n: int, fraction: float, subset_seed: int) -> np.ndarray:
    """Sorted indices of a deterministic subset; smaller fractions give nested subsets."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"task.fraction must be in (0, 1], got {fraction}")
    k = math.ceil(round(fraction * n, 9))  # round: 0.3 * 10 must keep 3, not 4
    perm = np.random.default_rng(subset_seed).permutation(n)
    return np.sort(perm[:k])


def build_sequence(prompt: list[int], completion: list[int], seq_len: int) -> tuple[list, int]:
    """Tokens (at most seq_len + 1) and how many of them are prompt; cut the prompt's left."""
    completion = completion[:seq_len]  # leaves room for at least one prompt token
    keep = seq_len + 1 - len(completion)
    if len(prompt) > keep:
        # keep the leading EOT (BOS role) and drop the oldest context tokens after it
        prompt = prompt[:1] + prompt[len(prompt) - keep + 1 :] if keep >= 2 else prompt[-1:]
    return prompt + completion, len(prompt)


class TaskBatches:
    """Shuffled training batches and fixed validation batches of task examples."""

    def __init__(
        self,
        train: Sequence[TaskExample],
        val: Sequence[TaskExample],
        tok: Tokenizer,
        seq_len: int,
        micro_batch_size: int,
        seed: int,
        fraction: float = 1.0,
        subset_seed: int = 0,
        grad_accum: int = 1,
        eot: int | None = None,
    ) -> None:
        if seq_len < 1 or micro_batch_size < 1 or grad_accum < 1:
            raise ValueError("seq_len, micro_batch_size and grad_accum must be >= 1")
        if not train or not val:
            raise DataError(f"task has {len(train)} train and {len(val)} validation examples")
        keep = subset_indices(len(train), fraction, subset_seed)
        # a foreign tokenizer (Hugging Face model) may not know our EOT text: then `eot` is its
        # EOS id, used as the prompt's leading token, the completion's end and the padding
        self.eot = eot_id(tok) if eot is None else eot
        self._eot_as_id = eot is not None
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self._tok = tok
        self._train = [train[i] for i in keep]
        self._val = list(val)
        self._cache: dict[tuple[str, int], tuple[list, int]] = {}
        self.num_train_examples = len(self._train)
        self._perms: dict[int, np.ndarray] = {}

    def _encode(self, split: str, indices: Sequence[int]) -> list[tuple[list, int]]:
        """Tokenize on first use: a short run touches a few examples of a large task."""
        examples = self._train if split == "train" else self._val
        todo = [i for i in dict.fromkeys(indices) if (split, i) not in self._cache]
        if todo:
            texts = [format_prompt(examples[i].context) for i in todo]
            if self._eot_as_id:
                texts = [t.removeprefix(EOT) for t in texts]
            prompts = [
                ([self.eot] if self._eot_as_id else []) + e.ids
                for e in self._tok.encode_batch(texts, add_special_tokens=False)
            ]
            comps = self._tok.encode_batch(
                [format_completion(examples[i].completion) for i in todo],
                add_special_tokens=False,
            )
            for i, p, c in zip(todo, prompts, comps, strict=True):
                self._cache[(split, i)] = build_sequence(p, c.ids + [self.eot], self.seq_len)
        return [self._cache[(split, i)] for i in indices]

    def _collate(self, seqs: list[tuple[list, int]]) -> Batch:
        width = max(len(tokens) for tokens, _ in seqs) - 1  # pad to the longest, not seq_len
        x = torch.full((len(seqs), width), self.eot, dtype=torch.long)
        y = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
        for row, (tokens, n_prompt) in enumerate(seqs):
            t = torch.tensor(tokens, dtype=torch.long)
            x[row, : len(t) - 1] = t[:-1]
            y[row, n_prompt - 1 : len(t) - 1] = t[n_prompt:]
        return x, y

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:  # callers walk epochs forward; keep memory bounded
                self._perms.clear()
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
            self._perms[epoch] = rng.permutation(self.num_train_examples)
        return self._perms[epoch]

    def train_batch(self, step: int, micro: int) -> Batch:
        """(x, y) of shape [B, L], L <= seq_len; y = -100 on prompt and padding."""
        if step < 0 or not 0 <= micro < self.grad_accum:
            raise ValueError(f"need step >= 0 and 0 <= micro < {self.grad_accum}: {step}, {micro}")
        n, b = self.num_train_examples, self.micro_batch_size
        first = (step * self.grad_accum + micro) * b
        picks = [int(self._epoch_order(g // n)[g % n]) for g in range(first, first + b)]
        return self._collate(self._encode("train", picks))

    def val_batches(self, n_batches: int) -> list[Batch]:
        """Up to `n_batches` batches of evenly spaced validation examples (seed-independent)."""
        if n_batches < 1:
            raise ValueError(f"n_batches must be >= 1, got {n_batches}")
        n, b = len(self._val), self.micro_batch_size
        if n_batches * b >= n:
            idx = np.arange(n)
        else:
            idx = np.floor(np.linspace(0, n - 1, num=n_batches * b)).astype(np.int64)
        return [
            self._collate(self._encode("validation", [int(i) for i in idx[k : k + b]]))
            for k in range(0, len(idx), b)
        ]

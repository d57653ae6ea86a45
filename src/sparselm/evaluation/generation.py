"""Deterministic decoding for a causal LM: greedy and beam search, as pure functions.

Both take ``model(idx).logits`` ([B, T, V]) and a list of prompt ids, and return the generated
ids only (without the prompt). The model has no KV cache, so every step re-runs the visible
window: the last ``window`` (default ``model.config.block_size``) tokens of prompt + generated,
so a long prompt slides out on the left as tokens are generated.

Conventions (match Hugging Face ``generate`` unless noted):

* A hypothesis finishes when it emits ``eos_id`` (the EOS id is not returned) or when
  ``stop_fn(generated_ids)`` says so (the ids that completed the stop are returned; the caller
  cuts the text at its stop string).
* Beam search keeps the ``num_beams`` best running beams out of the top ``2 * num_beams``
  candidates, scores a finished hypothesis by ``sum_logprob / gen_len ** length_penalty``
  (``gen_len`` counts generated tokens including the EOS), and stops once no running beam can
  beat the worst kept hypothesis (HF's ``early_stopping=False`` heuristic).
* ``no_repeat_ngram_size`` bans n-grams repeated within the *generated* tokens only (as
  microsoft/LoRA's NLG beam search does), so the model may still copy n-grams of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

StopFn = Callable[[list[int]], bool]


def banned_tokens(generated: Sequence[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram already present in ``generated``."""
    if n <= 0 or len(generated) < n - 1:
        return set()
    if n == 1:
        return set(generated)
    prefix = tuple(generated[len(generated) - n + 1 :])
    return {
        generated[i + n - 1]
        for i in range(len(generated) - n + 1)
        if tuple(generated[i : i + n - 1]) == prefix
    }


@torch.no_grad()
def next_logprobs(
    model: nn.Module, seqs: list[list[int]], window: int | None = None
) -> torch.Tensor:
    """Log-probabilities [len(seqs), V] of the next token; all seqs have the same length."""
    window = window or model.config.block_size
    device = next(model.parameters()).device
    idx = torch.tensor([s[-window:] for s in seqs], dtype=torch.long, device=device)
    logits = model(idx).logits[:, -1, :].float()
    return torch.log_softmax(logits, dim=-1)


def _ban(logprobs: torch.Tensor, gens: list[list[int]], n: int) -> None:
    for row, gen in enumerate(gens):
        banned = banned_tokens(gen, n)
        if banned:
            logprobs[row, list(banned)] = float("-inf")


def greedy_decode(
    model: nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    eos_id: int | None = None,
    stop_fn: StopFn | None = None,
    no_repeat_ngram_size: int = 0,
    *,
    window: int | None = None,
) -> list[int]:
    """Arg-max decoding until EOS, ``stop_fn`` or ``max_new_tokens``."""
    prompt = list(prompt_ids)
    gen: list[int] = []
    for _ in range(max_new_tokens):
        logprobs = next_logprobs(model, [prompt + gen], window)
        _ban(logprobs, [gen], no_repeat_ngram_size)
        token = int(torch.argmax(logprobs[0]))
        if token == eos_id:
            break
        gen.append(token)
        if stop_fn is not None and stop_fn(gen):
            break
    return gen


class _Finished:
    """The ``num_beams`` best finished hypotheses, as (score, ids)."""

    def __init__(self, num_beams: int, length_penalty: float) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.items: list[tuple[float, list[int]]] = []

    def add(self, ids: list[int], sum_logprob: float, gen_len: int) -> None:
        score = sum_logprob / max(gen_len, 1) ** self.length_penalty
        self.items.append((score, ids))
        self.items.sort(key=lambda item: -item[0])
        del self.items[self.num_beams :]

    def is_done(self, best_running: float, gen_len: int) -> bool:
        if len(self.items) < self.num_beams:
            return False
        return self.items[-1][0] >= best_running / max(gen_len, 1) ** self.length_penalty

    def best(self) -> list[int]:
        return self.items[0][1] if self.items else []


def beam_search(
    model: nn.Module,
    prompt_ids: Sequence[int],
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    eos_id: int | None = None,
    stop_fn: StopFn | None = None,
    *,
    window: int | None = None,
) -> list[int]:
    """Beam search, batched over beams; returns the best finished hypothesis."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    prompt = list(prompt_ids)
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished = _Finished(num_beams, length_penalty)
    for step in range(max_new_tokens):
        gens = [gen for gen, _ in beams]
        logprobs = next_logprobs(model, [prompt + gen for gen in gens], window)
        _ban(logprobs, gens, no_repeat_ngram_size)
        scores = logprobs + torch.tensor([s for _, s in beams], device=logprobs.device)[:, None]
        k = min(2 * num_beams, scores.numel())
        top, flat = torch.topk(scores.view(-1), k)
        beams = _advance(
            beams,
            top.tolist(),
            flat.tolist(),
            logprobs.size(1),
            finished,
            eos_id,
            stop_fn,
            step + 1,
        )
        if not beams or finished.is_done(beams[0][1], step + 1):
            return finished.best()
    for gen, score in beams:  # out of budget: running beams compete as they are
        finished.add(gen, score, len(gen))
    return finished.best()


def _advance(
    beams: list[tuple[list[int], float]],
    top: list[float],
    flat: list[int],
    vocab: int,
    finished: _Finished,
    eos_id: int | None,
    stop_fn: StopFn | None,
    gen_len: int,
) -> list[tuple[list[int], float]]:
    """Next running beams from ranked candidates; finished ones go to ``finished``."""
    running: list[tuple[list[int], float]] = []
    for rank, (score, index) in enumerate(zip(top, flat, strict=True)):
        if score == float("-inf"):
            break
        gen, token = beams[index // vocab][0], index % vocab
        if token == eos_id or (stop_fn is not None and stop_fn(gen + [token])):
            # like HF: only an end among the top num_beams candidates may finish a hypothesis
            if rank < finished.num_beams:
                finished.add(gen if token == eos_id else gen + [token], score, gen_len)
            continue
        running.append((gen + [token], score))
        if len(running) == finished.num_beams:
            break
    return running

"""Greedy and beam-search decoding: agreement, exactness on a tiny space, n-gram bans, stops."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from helpers import toy_model
from torch import nn

from sparselm.evaluation.generation import banned_tokens, beam_search, greedy_decode


class BigramModel(nn.Module):
    """Next-token logits depend only on the last token: a table we can reason about."""

    def __init__(self, table: torch.Tensor, block_size: int = 32) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone(), requires_grad=False)
        self.config = SimpleNamespace(block_size=block_size)

    def forward(self, idx: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[idx])


def cycle_model(vocab: int = 8) -> BigramModel:
    """Strongly prefers 1 -> 2 -> 3 -> 1 ..., so plain decoding repeats every n-gram."""
    table = torch.zeros(vocab, vocab)
    for a, b in ((0, 1), (1, 2), (2, 3), (3, 1)):
        table[a, b] = 5.0
    table[:, 0] = -5.0  # EOS (id 0) is unlikely
    return BigramModel(table)


def has_repeated_ngram(ids: list[int], n: int) -> bool:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) != len(set(grams))


def test_banned_tokens():
    assert banned_tokens([1, 2, 3, 1, 2], 3) == {3}
    assert banned_tokens([1, 2, 3, 1, 2], 2) == {3}  # after "2" came "3" before
    assert banned_tokens([1, 2], 3) == set()
    assert banned_tokens([4, 5], 0) == set()
    assert banned_tokens([4, 5], 1) == {4, 5}


@pytest.mark.parametrize("eos", [None, 7])
def test_beam_search_with_one_beam_equals_greedy(eos):
    model = toy_model(seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        prompt = torch.randint(0, 64, (5,), generator=gen).tolist()
        greedy = greedy_decode(model, prompt, 12, eos_id=eos)
        beam = beam_search(model, prompt, 1, 12, length_penalty=0.8, eos_id=eos)
        assert beam == greedy


def test_beam_search_is_exact_when_beams_cover_every_sequence():
    # vocab 4, 3 steps: at most 27 running hypotheses, so 64 beams keep every one of them and
    # the result must be the best sequence under sum_logprob / gen_len ** length_penalty.
    torch.manual_seed(3)
    model = BigramModel(torch.randn(4, 4) * 2)
    eos, steps, lp = 0, 3, 0.7
    logp = torch.log_softmax(model.table, dim=-1)

    def score(prompt_last: int, seq: tuple[int, ...]) -> float:
        prev, total = prompt_last, 0.0
        for tok in seq:
            total, prev = total + float(logp[prev, tok]), tok
        return total / len(seq) ** lp

    candidates = []
    for length in range(1, steps + 1):
        for body in itertools.product((1, 2, 3), repeat=length - 1):
            candidates.append(body + (eos,))  # ends with EOS (returned without it)
    candidates += list(itertools.product((1, 2, 3), repeat=steps))  # ran out of budget
    best = max(candidates, key=lambda seq: score(2, seq))
    expected = [t for t in best if t != eos]
    assert beam_search(model, [2], 64, steps, length_penalty=lp, eos_id=eos) == expected


@pytest.mark.parametrize("n", [2, 3, 4])
def test_no_repeat_ngram_is_respected(n):
    model = cycle_model()
    plain = beam_search(model, [0], 3, 20, eos_id=0)
    assert has_repeated_ngram(plain, n)  # the ban below is what prevents it
    for num_beams in (1, 3):
        out = beam_search(model, [0], num_beams, 20, no_repeat_ngram_size=n, eos_id=0)
        assert len(out) == 20 and not has_repeated_ngram(out, n)
    assert not has_repeated_ngram(greedy_decode(model, [0], 20, 0, None, n), n)


def test_stop_fn_ends_the_hypothesis_after_the_stopping_token():
    model = cycle_model()
    stop = lambda ids: ids[-1] == 3  # noqa: E731
    assert greedy_decode(model, [0], 20, eos_id=0, stop_fn=stop) == [1, 2, 3]
    assert beam_search(model, [0], 4, 20, eos_id=0, stop_fn=stop) == [1, 2, 3]


def test_eos_is_not_returned_and_window_slides():
    table = torch.full((6, 6), -5.0)
    table[1, 2] = table[2, 5] = 5.0  # 1 -> 2 -> EOS(5)
    model = BigramModel(table, block_size=2)
    long_prompt = [3, 4, 3, 4, 3, 1]  # longer than the window: only the tail is seen
    assert greedy_decode(model, long_prompt, 10, eos_id=5) == [2]
    assert beam_search(model, long_prompt, 2, 10, eos_id=5) == [2]

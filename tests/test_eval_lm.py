"""The lm-eval adapter agrees with a hand computation on a tiny randomly initialised GPT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import save_tiny_run
from lm_eval.api.instance import Instance

from sparselm.errors import ConfigError
from sparselm.evaluation.lm import SparselmLM, cut_at_stop
from sparselm.tokenizer import EOT

# Batched (padded) and single-row forwards use differently shaped matmuls; fp32 rounding of a
# sum of ~30 log-probs stays far below this, a wrong position or token is O(0.1).
ATOL = 1e-4
TEXTS = [
    "the quick brown fox jumps over the lazy dog. " * 3,
    "Hello world, hello there!\n",
    "name : The Eagle | food : French || The Eagle serves French food .\n",
] * 20


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_tiny_run(tmp_path_factory.mktemp("eval_lm") / "run", TEXTS, block_size=32)


@pytest.fixture(scope="module")
def lm(run_dir) -> SparselmLM:
    return SparselmLM(pretrained=str(run_dir), device="cpu", batch_size=2)


def request(kind: str, args: tuple) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def hand_score(lm: SparselmLM, tokens: list[int], first_scored: int) -> float:
    """sum_j log p(tokens[j] | tokens[:j]) for j >= first_scored, one unbatched forward."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([tokens[:-1]])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return sum(float(logp[j - 1, tokens[j]]) for j in range(first_scored, len(tokens)))


def test_loglikelihood_matches_hand_computation(lm):
    pairs = [
        ("the quick brown", " fox jumps"),
        ("Hello", " world, hello there!"),
        ("name : The Eagle ||", " The Eagle serves French food ."),
        (" the lazy dog." * 12, " the quick brown fox"),
    ]  # longer than the window
    results = lm.loglikelihood([request("loglikelihood", p) for p in pairs])
    assert len(lm.tok_encode("".join(pairs[-1]))) > lm.max_length + 1
    for (ctx, cont), (got, _) in zip(pairs, results, strict=True):
        ctx_ids, whole = lm.tok_encode(ctx), lm.tok_encode(ctx + cont)
        n_cont = len(whole) - len(ctx_ids)
        window = whole[-(lm.max_length + 1) :]  # the context is cut on the left
        assert got == pytest.approx(hand_score(lm, window, len(window) - n_cont), abs=ATOL)


def test_is_greedy(lm):
    ctx = lm.tok_encode("Hello world")
    greedy = []
    with torch.no_grad():
        for _ in range(4):
            logits = lm.model(torch.tensor([ctx + greedy])).logits[0, -1]
            greedy.append(int(logits.argmax()))
    other = greedy[:-1] + [(greedy[-1] + 1) % lm.model.config.vocab_size]
    results = lm._loglikelihood_tokens([(None, ctx, greedy), (None, ctx, other)])
    assert [g for _, g in results] == [True, False]


def test_rolling_equals_whole_text_sum_when_it_fits_one_window(lm):
    text = "the quick brown fox jumps over"
    ids = lm.tok_encode(text)
    assert len(ids) < lm.max_length
    (got,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", (text,))])
    assert got == pytest.approx(hand_score(lm, [lm.eot_token_id] + ids, 1), abs=ATOL)


def test_rolling_uses_disjoint_windows(run_dir):
    lm = SparselmLM(pretrained=str(run_dir), device="cpu", batch_size=3, max_length=8)
    text = "the quick brown fox jumps over the lazy dog. Hello world, hello there!"
    ids = lm.tok_encode(text)
    assert len(ids) > 2 * 8
    # each window scores the next (up to) 8 tokens; its 8 inputs are EOT or earlier tokens
    # followed by the chunk itself: 1 token of context for a full chunk, more for the last one
    expected = 0.0
    for start in range(0, len(ids), 8):
        chunk = ids[start : start + 8]
        prev = ids[start - (9 - len(chunk)) : start] if start else [lm.eot_token_id]
        expected += hand_score(lm, prev + chunk, len(prev))
    (got,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", (text,))])
    assert got == pytest.approx(expected, abs=ATOL)


def test_generate_until_cuts_at_stop_strings(lm):
    prompt = f"{EOT}name : The Eagle | food : French ||"
    free = lm.generate_until([request("generate_until", (prompt, {"max_gen_toks": 12}))])[0]
    assert len(free) >= 4, free
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    kwargs = {"until": [stop], "max_gen_toks": 12, "do_sample": False, "num_beams": 1}
    cut = lm.generate_until([request("generate_until", (prompt, kwargs))])[0]
    assert cut == free.split(stop)[0] and stop not in cut
    assert cut_at_stop("a b\nc", ("\n", "b")) == "a "


@pytest.mark.parametrize("kwargs", [{"do_sample": True}, {"top_q": 0.9}, {"num_beams": 0}])
def test_generate_until_refuses_unsupported_settings(lm, kwargs):
    with pytest.raises(ConfigError):
        lm.generate_until([request("generate_until", ("Hello", kwargs))])


def test_max_length_beyond_block_size_is_refused(run_dir):
    with pytest.raises(ConfigError, match="max_length"):
        SparselmLM(pretrained=str(run_dir), device="cpu", max_length=33)


def test_continuations_longer_than_the_window_are_counted_per_task(lm):
    long = " the lazy dog." * 20
    assert len(lm.tok_encode(long)) > lm.max_length
    reqs = [
        Instance("loglikelihood", {}, ("Hello", long), 0, ("sparselm_piqa", 0, 1)),
        Instance("loglikelihood", {}, ("Hello", " world"), 1, ("sparselm_piqa", 1, 1)),
        Instance("loglikelihood", {}, ("the quick", " brown"), 0, ("sparselm_arc_easy", 0, 1)),
    ]
    lm.truncated.clear()
    lm.loglikelihood(reqs)
    assert lm.truncated == {"sparselm_piqa": 1, "sparselm_arc_easy": 0}

"""Batched HF decoding keeps our semantics: n-gram bans on generated text only, whole prompts
with a per-row budget, per-beam stop strings, batch-size independence, and the same strings as
the hand-written decoder it replaced (``fixtures/eval_decoding``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import save_tiny_run
from lm_eval.api.instance import Instance

from sparselm.evaluation.generation import GeneratedNgramBan, GenSettings, StopStrings
from sparselm.evaluation.lm import SparselmLM
from sparselm.evaluation.tasks.nlg_metrics import corpus_bleu

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "eval_decoding"
TEXTS = ["name : The Eagle | food : French || The Eagle serves French food .\n"] * 40


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((FIXTURE / "outputs.json").read_text())


@pytest.fixture(scope="module")
def fixture_lm() -> SparselmLM:
    return SparselmLM(pretrained=FIXTURE / "checkpoint", device="cpu", batch_size=8)


def requests(prompts: list[str], kwargs: dict) -> list[Instance]:
    return [
        Instance("generate_until", {}, (p, kwargs), 0, ("sparselm_e2e_nlg", i, 1))
        for i, p in enumerate(prompts)
    ]


def fixture_kwargs(record: dict, name: str) -> dict:
    return record["common"] | record["settings"][name]


def test_ngram_ban_counts_generated_tokens_only():
    prompt = torch.tensor([[5, 6, 7, 5, 6]])  # the prompt repeats "5 6" -> 7: not banned
    ban = GeneratedNgramBan(3, prompt_len=5)
    gen = torch.tensor([[1, 2, 3, 1, 2]])
    out = ban(torch.cat([prompt, gen], dim=1), torch.zeros(1, 10))
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [3]  # "1 2 3" would repeat
    out = ban(torch.cat([prompt, torch.tensor([[5, 6]])], dim=1), torch.zeros(1, 10))
    assert not torch.isinf(out).any()  # "5 6 7" exists only in the prompt


def test_stop_strings_are_checked_per_row():
    class Tok:
        def decode_batch(self, rows, skip_special_tokens=False):
            return ["".join("\n" if t == 9 else "a" for t in row) for row in rows]

    stop = StopStrings(Tok(), ["\n"], prompt_len=2)
    ids = torch.tensor([[9, 9, 1, 1], [1, 1, 1, 9], [9, 1, 9, 1]])  # prompt "\n" never counts
    assert stop(ids, None).tolist() == [False, True, True]


@pytest.mark.parametrize("name", ["greedy", "beam4"])
def test_same_strings_as_the_old_decoder(record, fixture_lm, name):
    got = fixture_lm.generate_until(requests(record["prompts"], fixture_kwargs(record, name)))
    want = record["outputs"][name]
    assert got == want


@pytest.mark.parametrize("name", ["beam4"])
def test_results_do_not_depend_on_batch_size(record, name):
    prompts = record["prompts"][:16]
    outs = []
    for batch_size in (1, 5, 16):
        lm = SparselmLM(pretrained=FIXTURE / "checkpoint", device="cpu", batch_size=batch_size)
        outs.append(lm.generate_until(requests(prompts, fixture_kwargs(record, name))))
    assert outs[0] == outs[1] == outs[2]
    refs = record["references"][:16]
    assert corpus_bleu(list(zip(refs, outs[0], strict=True))) > 0


def hand_greedy(lm: SparselmLM, prompt: list[int], steps: int) -> list[int]:
    """Arg-max decoding with full forwards of our own GPT (no cache, no HF)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_long_prompts_are_kept_whole_and_decode_until_the_window_is_full(tmp_path):
    run = save_tiny_run(tmp_path / "run", TEXTS, block_size=32)
    lm = SparselmLM(pretrained=run, device="cpu", batch_size=4)
    eot = lm.eot_token_id
    long_ids = [t for t in lm.tok_encode(TEXTS[0] * 3) if t != eot][:27]
    short_ids = long_ids[:6]
    settings = GenSettings(until=(), max_gen_toks=16)
    # lm-eval's hf backend would cut the long prompt to 32 - 16 = 16 tokens; we keep all 27
    texts = lm.generate_ids([long_ids, short_ids], settings)
    for ids, text, budget in ((long_ids, texts[0], 5), (short_ids, texts[1], 16)):
        expected = hand_greedy(lm, ids, budget)
        expected = expected[: expected.index(eot)] if eot in expected else expected
        assert text == lm.tok_decode(expected)
    assert lm.truncated == {}


def test_a_prompt_that_fills_the_window_is_counted(tmp_path):
    run = save_tiny_run(tmp_path / "run", TEXTS, block_size=32)
    lm = SparselmLM(pretrained=run, device="cpu", batch_size=4)
    prompt = TEXTS[0] * 4
    assert len(lm.tok_encode(prompt)) > 31
    lm.generate_until(requests([prompt, "name :"], {"max_gen_toks": 4}))
    assert lm.truncated == {"sparselm_e2e_nlg": 1}


def test_a_hugging_face_model_folder_is_scored_and_decoded_the_same(tmp_path, record, fixture_lm):
    from sparselm.hf_export import export_checkpoint

    folder = export_checkpoint(FIXTURE / "checkpoint", tmp_path / "hf")
    hf_lm = SparselmLM(pretrained=folder, device="cpu", batch_size=8)
    assert hf_lm.eot_token_id == fixture_lm.eot_token_id and hf_lm.max_length == 256
    prompts = record["prompts"][:8]
    got = hf_lm.generate_until(requests(prompts, fixture_kwargs(record, "beam4")))
    assert got == record["outputs"]["beam4"][:8]
    pairs = [Instance("loglikelihood", {}, (p, " The"), 0, ("t", 0, 1)) for p in prompts]
    ours, theirs = fixture_lm.loglikelihood(pairs), hf_lm.loglikelihood(pairs)
    for (a, _), (b, _) in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, abs=1e-4)

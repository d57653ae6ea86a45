"""The Hugging Face export reproduces our logits and our tokenization."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import toy_model

from sparselm.checkpoint import TrainingState, save_checkpoint
from sparselm.cli.export import main as export_main
from sparselm.errors import ConfigError
from sparselm.tokenizer import EOT, save_tokenizer, train_bpe

# Same math in fp32, but HF runs Conv1D (addmm) where we run nn.Linear, so bit-equality is not
# guaranteed across kernels/threads; 1e-5 is ~100x fp32 rounding at these logit magnitudes
# (|logit| ~ 1) and far below any real mapping bug (a wrong transpose or bias is O(0.1)).
ATOL = 1e-5

TEXTS = [
    "the quick brown fox jumps over the lazy dog. " * 3,
    "Hello world, hello there!\n",
    "sparse models train faster per FLOP; dense ones per second.",
] * 20
SAMPLES = [
    "the quick fox, hello world!",
    "  leading spaces\tand tabs\n\nnewlines",
    f"two documents{EOT}joined",
    "Ünïcode 🙂 bytes",
    "",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparselm.cli.export", *args],
        capture_output=True,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder holding one checkpoint and its tokenizer."""
    tok = train_bpe(TEXTS, vocab_size=300)
    model = toy_model(seed=3, vocab_size=tok.get_vocab_size())
    with torch.no_grad():  # init leaves biases 0 and LN gains 1; perturb so every tensor counts
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    run = tmp_path_factory.mktemp("export") / "run"
    save_checkpoint(run, TrainingState(step=1), model, None, {}, "")
    save_tokenizer(tok, run / "tokenizer.json")
    return run


@pytest.mark.slow
def test_export_matches_logits_and_tokenization(run_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sparselm.loading import load_trained

    out = tmp_path / "hf"
    result = _cli(f"checkpoint={run_dir}", f"out={out}")
    assert result.returncode == 0, result.stderr
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    ours, tok, _ = load_trained(run_dir)

    x = torch.randint(
        0,
        ours.config.vocab_size,
        (3, ours.config.block_size),
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        expected, got = ours(x).logits, hf_model(x).logits
    assert expected.abs().max() > 0.5  # the comparison is not vacuous
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0.0)

    for text in SAMPLES:
        ids = tok.encode(text).ids
        assert hf_tok(text)["input_ids"] == ids, text
        assert hf_tok.decode(ids) == text
    assert hf_tok.eos_token == hf_tok.bos_token == EOT
    assert hf_tok.eos_token_id == tok.token_to_id(EOT) == hf_model.config.eos_token_id
    assert hf_model.config.activation_function == "gelu_new"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folders left


def test_reexport_replaces_an_earlier_export(run_dir, tmp_path):
    out = tmp_path / "hf"
    assert export_main([f"checkpoint={run_dir}", f"out={out}"]) == 0
    (out / "stale.txt").write_text("from an earlier export")
    assert (
        export_main([f"checkpoint={run_dir / 'checkpoints' / 'step_00000001'}", f"out={out}"]) == 0
    )
    assert not (out / "stale.txt").exists()
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_bias_free_model_is_a_config_error():
    from sparselm.hf_export import to_hf_gpt2

    with pytest.raises(ConfigError, match="model.bias"):
        to_hf_gpt2(toy_model(bias=False))


def test_unknown_key_is_a_one_line_error():
    result = _cli("checkpoint=x", "out=y", "dtype=bf16")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "dtype=bf16" in result.stderr


@pytest.mark.parametrize("argv", [["out=y"], ["checkpoint=x"], ["checkpoint", "out=y"]])
def test_missing_or_malformed_arguments(argv, capsys):
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert export_main([f"checkpoint={tmp_path / 'nowhere'}", f"out={tmp_path / 'hf'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no complete checkpoint" in err
    assert not (tmp_path / "hf").exists()


def test_refuses_to_overwrite_a_foreign_folder(run_dir, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert export_main([f"checkpoint={run_dir}", f"out={out}"]) == 2
    assert "out=" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"

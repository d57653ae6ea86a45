"""Prune + sparse fine-tune with distillation through the real entry point, on our GPT and on
Hugging Face GPT-2 / Llama models saved locally (random weights, no downloads)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import save_tiny_run
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from sparselm.checkpoint import latest_checkpoint
from sparselm.cli.common import run_cli
from sparselm.cli.sparse_finetune import main
from sparselm.data.tasks import load_task
from sparselm.schedules import warmup_linear_lr


@pytest.fixture(scope="module")
def teacher(data_dir, tmp_path_factory) -> Path:
    """A dense run of our GPT with a BPE trained on E2E text (stands in for the fine-tuned one)."""
    examples = load_task("e2e", "train", data_dir)[:300]
    texts = [f"{e.context} {e.completion}" for e in examples]
    return save_tiny_run(tmp_path_factory.mktemp("teacher"), texts, block_size=64)


def _hf_model(kind: str, folder: Path, tokenizer: Path) -> Path:
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = GPT2Config(
            vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(
            vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    shutil.copyfile(tokenizer, folder / "tokenizer.json")
    return folder


def _run(out: Path, data_dir: Path, *overrides: str) -> dict:
    args = [
        "scale=smoke", "device=cpu", "logger=none", f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}", *overrides,
    ]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _per_token_by_hand(run: Path, d_model: int, vocab: int, layers: int) -> float:
    """squarehead.md §6 counted from the run's own files, not through the ledger's code:
    3·F(student under its masks) + F(dense teacher), where F = 2·(block weights kept) + 4·T·d
    per layer (the full T×T scores) + 2·d·V (the head)."""
    masks = load_file(latest_checkpoint(run) / "hooks.safetensors")
    masks = [m for k, m in masks.items() if k.startswith("static_sparsity/")]
    kept, total = sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks)
    seq_len = min(yaml.safe_load((run / "config.yaml").read_text())["train"]["seq_len"], 64)
    fixed = 4.0 * seq_len * d_model * layers + 2.0 * d_model * vocab
    return 3.0 * (2.0 * kept + fixed) + (2.0 * total + fixed)


@pytest.mark.parametrize("pruner", ["magnitude", "sparsegpt"])
def test_one_shot_prune_then_fixed_mask_finetune_keeps_masks_exact(
    pruner, teacher, data_dir, tmp_path
):
    weights = next(teacher.glob("checkpoints/step_*/model.safetensors"))
    before = _sha(weights)
    m = _run(
        tmp_path / "run", data_dir, f"teacher={teacher}", f"prune={pruner}",
        "prune.sparsity=0.7", "distill=ce_kl_squarehead",
    )  # fmt: skip
    assert m["mask_zero_outside"] and m["mask_nnz_unchanged"]
    assert m["mask_sparsity"] == pytest.approx(0.7, abs=2e-3)
    assert m["steps"] == 8 and m["prune_method"] == pruner
    assert len(m["layerwise_error_pruned"]) == len(m["layerwise_error_final"]) == 2
    assert m["pruned_val_loss"] > 0 and m["dense_val_loss"] > 0
    assert m["inference_flops_ratio"] > 1.0  # the head and attention stay dense: not 1/0.3
    # the one FLOP ledger, with the teacher's forward reported by the distillation hook
    vocab = Tokenizer.from_file(str(teacher / "tokenizer.json")).get_vocab_size()
    by_hand = _per_token_by_hand(tmp_path / "run", 32, vocab, 2)  # helpers.toy_config's shape
    assert m["flops_total"] / m["tokens"] == pytest.approx(by_hand, rel=1e-12)
    # the saved student is as sparse as its mask; the teacher's files are untouched
    saved = load_file(next((tmp_path / "run").glob("checkpoints/step_*/model.safetensors")))
    block = [v for k, v in saved.items() if k.startswith("blocks.") and v.dim() == 2]
    zeros = sum(int((w == 0).sum()) for w in block) / sum(w.numel() for w in block)
    assert zeros >= 0.7 - 2e-3
    assert _sha(weights) == before
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert {"loss_ce", "loss_kl", "loss_squarehead"} <= set(log[-1])
    # squarehead.md §3.2: linear decay to 0 after warmup, no gradient clipping
    optim = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]
    assert optim["grad_clip"] is None and optim["lr_schedule"] == "linear"
    assert optim["min_lr"] == 0.0
    want = [
        warmup_linear_lr(r["step"] - 1, optim["lr"], 0.0, optim["warmup_steps"], 8) for r in log
    ]
    assert [r["lr"] for r in log] == pytest.approx(want)
    assert warmup_linear_lr(8, optim["lr"], 0.0, optim["warmup_steps"], 8) == 0.0


def test_gradual_pruning_reaches_the_final_sparsity(teacher, data_dir, tmp_path):
    m = _run(
        tmp_path / "run", data_dir, f"teacher={teacher}", "prune=gradual",
        "prune.sparsity=0.6", "prune.every=2", "distill=ce",
    )  # fmt: skip
    assert m["mask_zero_outside"]
    assert m["mask_sparsity"] == pytest.approx(0.6, abs=2e-3)
    assert "layerwise_error_pruned" not in m  # nothing is pruned before training


def test_nm_pruning_is_n_of_every_m(teacher, data_dir, tmp_path):
    m = _run(
        tmp_path / "run", data_dir, f"teacher={teacher}", "prune=sparsegpt",
        "prune.nm='2:4'", "distill=ce_squarehead",
    )  # fmt: skip
    assert m["prune_target"] == "2:4" and m["mask_sparsity"] == pytest.approx(0.5)
    saved = load_file(next((tmp_path / "run").glob("checkpoints/step_*/model.safetensors")))
    w = saved["blocks.0.mlp.fc_in.weight"]
    assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_hugging_face_model_through_the_same_cli(kind, teacher, data_dir, tmp_path):
    folder = _hf_model(kind, tmp_path / kind, teacher / "tokenizer.json")
    m = _run(
        tmp_path / "run", data_dir, "model=hf", f"model.path={folder}", "prune=sparsegpt",
        "prune.sparsity=0.5", "distill=ce_squarehead",
    )  # fmt: skip
    assert m["model_family"] == "hf" and m["mask_zero_outside"] and m["mask_nnz_unchanged"]
    assert m["mask_sparsity"] == pytest.approx(0.5, abs=2e-3)
    # the ledger counts the HF model's own linears (Llama: GQA's smaller k/v, a gated MLP)
    by_hand = _per_token_by_hand(tmp_path / "run", 32, 300, 2)
    assert m["flops_total"] / m["tokens"] == pytest.approx(by_hand, rel=1e-12)
    # the native HF save reloads, and its block weights keep the pruned zeros
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "hf_model")
    names = ("c_attn", "c_fc", "q_proj", "down_proj")
    block = [p for n, p in hf.named_parameters() if any(k in n for k in names) and p.dim() == 2]
    assert block and all(float((p == 0).float().mean()) >= 0.49 for p in block)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["prune.method=optimal"], "prune.method='optimal' is unknown"),
        (["prune.sparsity=1.2"], "prune.sparsity=1.2"),
        (["distill.temperature=0"], "distill.temperature=0"),
        (["prune.bogus=1"], "prune.bogus"),
        (["teacher=null"], "teacher is not set"),
        (["model=hf"], "model.path=None"),
    ],
)
def test_bad_input_is_one_line(args, needle, teacher, data_dir, tmp_path, capsys):
    argv = [f"teacher={teacher}", "scale=smoke", "logger=none", f"paths.data_dir={data_dir}"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, "sparse_finetune", [*argv, f"hydra.run.dir={tmp_path / 'out'}", *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and needle in err and "\n" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()

"""The Hugging Face wrapper: the right block linears, the same function as the HF model, and
masks, SparseGPT and SquareHead distillation working on it unchanged (tiny random models)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import RandomTokens
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.pytorch_utils import Conv1D

from sparselm.errors import ConfigError
from sparselm.hf_causal import HFCausalLM
from sparselm.methods.distill import DistillationHook, DistillConfig, Teacher
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import kept_count
from sparselm.sparsity.sparsegpt import SparseGPTConfig, sparsegpt_prune
from sparselm.sparsity.static import StaticSparsity
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, weight_decay=0.1)


def _gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


def _llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


GPT2_LAYOUT = [
    ("attn.c_attn", "q", (32, 32)),
    ("attn.c_attn", "k", (32, 32)),
    ("attn.c_attn", "v", (32, 32)),
    ("attn.c_proj", "attn_out", (32, 32)),
    ("mlp.c_fc", "mlp_in", (128, 32)),
    ("mlp.c_proj", "mlp_out", (32, 128)),
]
LLAMA_LAYOUT = [
    ("self_attn.q_proj", "q", (32, 32)),
    ("self_attn.k_proj", "k", (16, 32)),
    ("self_attn.v_proj", "v", (16, 32)),
    ("self_attn.o_proj", "attn_out", (32, 32)),
    ("mlp.gate_proj", "mlp_in", (64, 32)),
    ("mlp.up_proj", "mlp_in", (64, 32)),
    ("mlp.down_proj", "mlp_out", (32, 64)),
]
CASES = [
    (_gpt2, "hf.transformer.h", GPT2_LAYOUT),
    (_llama, "hf.model.layers", LLAMA_LAYOUT),
]


@pytest.mark.parametrize("build,prefix,layout", CASES, ids=["gpt2", "llama"])
def test_lists_the_block_linears_in_layer_order(build, prefix, layout):
    model = HFCausalLM(build())
    got = [(t.name, t.layer, t.kind, t.shape) for t in model.block_linears()]
    want = [
        (f"{prefix}.{layer}.{name}.weight", layer, kind, shape)
        for layer in range(2)
        for name, kind, shape in layout
    ]
    assert got == want
    for t in model.block_linears():
        assert model.get_parameter(t.name) is t.weight


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_wrapper_computes_what_the_hf_model_computes(build):
    hf = build().eval()
    x = RandomTokens().train_batch(0, 0)[0]
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True)
        model = HFCausalLM(copy.deepcopy(hf)).eval()
        out = model(x, return_hidden=True)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-5)
    assert len(out.hidden_states) == len(ref.hidden_states) - 1  # embeddings skipped
    torch.testing.assert_close(out.hidden_states[-1], ref.hidden_states[-1], rtol=1e-5, atol=1e-5)
    assert model(x).hidden_states is None


def test_gpt2_unwrap_restores_conv1d_with_the_same_weights():
    hf = _gpt2()
    c_attn = hf.transformer.h[0].attn.c_attn.weight.detach().clone()
    model = HFCausalLM(hf)
    assert isinstance(hf.transformer.h[0].attn.c_attn, torch.nn.Linear)
    back = model.unwrap()
    assert isinstance(back.transformer.h[0].attn.c_attn, Conv1D)
    assert torch.equal(back.transformer.h[0].attn.c_attn.weight, c_attn)


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_sparsegpt_then_squarehead_finetune_keeps_zeros(build, tmp_path):
    dense = HFCausalLM(build())
    student = copy.deepcopy(dense)
    targets = student.block_linears()
    calib = [RandomTokens(seed=2).train_batch(i, 0)[0] for i in range(2)]
    masks = sparsegpt_prune(student, targets, calib, SparseGPTConfig(sparsity=0.5))
    sparse = StaticSparsity(targets, MaskSet.from_targets(targets, masks), False, False)
    distill = DistillationHook(Teacher(dense), DistillConfig(ce=1.0, squarehead=1.0))
    opt = build_adamw(student, OPTIM)
    run = TrainRun(
        student, opt, RandomTokens(), TrainConfig(steps=4), OPTIM, tmp_path, [sparse, distill]
    )
    metrics = train(run)
    assert metrics["steps"] == 4
    for t, m in zip(targets, masks, strict=True):
        assert int((t.view() != 0).sum()) == kept_count(m.numel(), 0.5), t.name
        assert (t.view()[~m] == 0).all()
    assert all(not p.requires_grad for p in dense.parameters())


def test_unknown_architecture_is_a_one_line_config_error():
    cfg = GPTNeoXConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="no block linears"):
        HFCausalLM(GPTNeoXForCausalLM(cfg))

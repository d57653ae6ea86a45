"""The dense GPT exposes what methods need without knowing them."""

from __future__ import annotations

import torch
from helpers import toy_model

from sparselm.model import LINEAR_KINDS


def test_block_linears_are_tagged_and_qkv_slices_address_the_fused_matrix():
    model = toy_model()
    linears = model.block_linears()
    assert len(linears) == model.config.n_layer * len(LINEAR_KINDS)
    assert {(t.layer, t.kind) for t in linears} == {
        (i, k) for i in range(model.config.n_layer) for k in LINEAR_KINDS
    }
    d = model.config.d_model
    q, k, v = (t for t in linears if t.layer == 0 and t.kind in ("q", "k", "v"))
    with torch.no_grad():
        k.view().zero_()  # editing one slice touches only that third of the fused weight
    w = model.blocks[0].attn.qkv.weight
    assert (w[d : 2 * d] == 0).all() and (w[:d] != 0).all() and (w[2 * d :] != 0).all()
    assert all(t.shape == (d, d) for t in (q, k, v))
    names = {n for n, _ in model.named_parameters()}
    assert all(t.name in names for t in linears)
    assert not any("wte" in t.name or "wpe" in t.name or "lm_head" in t.name for t in linears)


def test_full_plan_equals_default_forward_and_a_skipped_block_is_not_run():
    model = toy_model().eval()
    x = torch.randint(0, 64, (2, 16))
    full = model(x).logits
    plan = [(i, 1.0) for i in range(model.config.n_layer)]
    assert torch.equal(model(x, plan=plan).logits, full)
    calls = []
    model.blocks[1].register_forward_hook(lambda *a: calls.append(1))
    model(x, plan=[(0, 1.0)])
    assert calls == []  # skipped blocks cost nothing


def test_residual_scale_gives_x_plus_c_times_the_block_update():
    # RaPTr's scaled block is x + c·F(x) with F(x) = attn(ln_1 x) + mlp(ln_2(x + attn(ln_1 x)))
    # (raptr.md §2.1). Checked in float64: the block computes c·((x + F) − x), whose rounding
    # against c·F is about eps·|x|, so 1e-12 separates a correct form from any other
    block = toy_model().double().eval().blocks[0]
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        a = block.attn(block.ln_1(x))
        update = a + block.mlp(block.ln_2(x + a))
        for c in (0.0, 0.5, 2.0):
            torch.testing.assert_close(block(x, scale=c), x + c * update, rtol=0, atol=1e-12)


def test_boolean_causal_mask_matches_builtin_causal_attention():
    model = toy_model().eval()
    x = torch.randint(0, 64, (2, 16))
    causal = torch.ones(16, 16, dtype=torch.bool).tril()
    torch.testing.assert_close(model(x, attn_mask=causal).logits, model(x).logits)
    per_layer = [causal, torch.eye(16, dtype=torch.bool)]  # layer 1 attends to itself only
    assert not torch.allclose(model(x, attn_mask=per_layer).logits, model(x).logits)


def test_hidden_states_one_per_executed_block():
    model = toy_model().eval()
    x = torch.randint(0, 64, (2, 16))
    out = model(x, return_hidden=True)
    assert len(out.hidden_states) == model.config.n_layer
    assert out.hidden_states[-1].shape == (2, 16, model.config.d_model)
    assert model(x).hidden_states is None


def test_hidden_states_equal_hf_gpt2_hidden_states_after_the_embeddings():
    # SquareHead distils HF's hidden_states[1:] (squarehead.md §2.1): blocks 1..L-1, then the
    # last block's output after the final LayerNorm. The exported model is the same network,
    # so only float32 summation order differs (1e-5)
    from sparselm.hf_export import to_hf_gpt2

    model = toy_model(n_layer=3).eval()
    hf = to_hf_gpt2(model).eval()
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        ours = model(x, return_hidden=True).hidden_states
        ref = hf(x, output_hidden_states=True).hidden_states[1:]
    assert len(ours) == len(ref) == 3
    for got, want in zip(ours, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # with a plan, the last executed block's output is the normed one
    with torch.no_grad():
        planned = model(x, plan=[(0, 1.0)], return_hidden=True).hidden_states
        first = model.blocks[0](model.wte(x) + model.wpe(torch.arange(16)))
    torch.testing.assert_close(planned[-1], model.ln_f(first))


def test_lm_head_is_tied_to_the_token_embedding():
    model = toy_model()
    assert model.lm_head.weight is model.wte.weight

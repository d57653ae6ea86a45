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
    scaled = model(x, plan=[(0, 2.0), (1, 1.0)]).logits
    assert not torch.allclose(scaled, full)


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


def test_lm_head_is_tied_to_the_token_embedding():
    model = toy_model()
    assert model.lm_head.weight is model.wte.weight

"""SparseGPT: exact counts, better layer reconstruction than magnitude pruning, sequential
pruning of a whole GPT with per-slice Q/K/V counts."""

from __future__ import annotations

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import kept_count, magnitude_mask
from sparselm.sparsity.pruning import nm_mask
from sparselm.sparsity.sparsegpt import SparseGPTConfig, collect_hessians, sparsegpt_prune
from sparselm.sparsity.sparsegpt import sparsegpt_solve as solve


def _layer(seed: int = 0, rows: int = 48, cols: int = 96, tokens: int = 512):
    """A weight and correlated inputs (a low-rank mix plus noise), as real activations are."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    mix = torch.randn(16, cols, generator=g)
    x = torch.randn(tokens, 16, generator=g) @ mix + 0.1 * torch.randn(tokens, cols, generator=g)
    return w, x


def _err(w, w_hat, x) -> float:
    return float(((x @ w.T - x @ w_hat.T) ** 2).sum())


@pytest.mark.parametrize("spec", [{"sparsity": 0.5}, {"sparsity": 0.7}, {"nm": (2, 4)}])
def test_sparsegpt_beats_magnitude_on_reconstruction(spec):
    w, x = _layer()
    cfg = SparseGPTConfig(blocksize=32, **spec)  # several column blocks on a small layer
    w_hat, keep = solve(w, 2 * x.T @ x / x.shape[0], cfg)
    if "nm" in spec:
        mag = nm_mask(w, *spec["nm"])
        assert (keep.reshape(w.shape[0], -1, 4).sum(-1) == 2).all()
    else:
        mag = magnitude_mask(w, 1 - spec["sparsity"])
        assert int(keep.sum()) == kept_count(w.numel(), 1 - spec["sparsity"])
    assert (w_hat[~keep] == 0).all() and (w_hat[keep] != 0).all()
    assert _err(w, w_hat, x) < 0.8 * _err(w, w * mag, x)


def test_row_groups_get_their_own_exact_counts():
    w, x = _layer(rows=3 * 20)
    groups = [slice(0, 20), slice(20, 40), slice(40, 60)]
    w[20:40] *= 10.0  # a global threshold would spare this slice entirely
    _, keep = solve(w, x.T @ x, SparseGPTConfig(sparsity=0.6, blocksize=32), groups)
    for g in groups:
        assert int(keep[g].sum()) == kept_count(20 * 96, 0.4)


def test_hessian_of_a_module_is_two_x_transpose_x():
    model = toy_model()
    batches = [RandomTokens().train_batch(i, 0)[0] for i in range(2)]
    module = model.blocks[0].mlp.fc_in
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(-1, 32)))
    h = collect_hessians(model, {"fc_in": module}, batches)["fc_in"]
    handle.remove()
    x = torch.cat(seen)
    torch.testing.assert_close(h, 2 * x.T @ x / x.shape[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", [{"sparsity": 0.5}, {"nm": (2, 4)}])
def test_prunes_whole_gpt_sequentially_with_exact_counts(spec):
    model = toy_model(n_layer=3)
    dense = toy_model(n_layer=3)
    targets = model.block_linears()
    calib = [RandomTokens(seed=1).train_batch(i, 0)[0] for i in range(4)]
    masks = sparsegpt_prune(model, targets, calib, SparseGPTConfig(**spec))
    MaskSet.from_targets(targets, masks).apply_to_weights()  # a no-op: already zero
    for t, m in zip(targets, masks, strict=True):
        nnz = int((t.view() != 0).sum())
        assert nnz == int(m.sum()), t.name
        if "nm" in spec:
            assert nnz * 2 == m.numel(), t.name
        else:
            assert nnz == kept_count(m.numel(), 0.5), t.name
    # embeddings, norms and head are untouched
    for name in ("wte.weight", "wpe.weight", "ln_f.weight"):
        assert torch.equal(model.get_parameter(name), dense.get_parameter(name))
    # the pruned model stays close to the dense one on the calibration data
    x = calib[0]
    with torch.no_grad():
        gap = (model(x).logits - dense(x).logits).pow(2).mean()
        magnitude = toy_model(n_layer=3)
        mags = [magnitude_mask(t.view(), 0.5) for t in magnitude.block_linears()]
        MaskSet.from_targets(magnitude.block_linears(), mags).apply_to_weights()
        gap_mag = (magnitude(x).logits - dense(x).logits).pow(2).mean()
    if "nm" not in spec:
        assert gap < gap_mag


def test_obs_update_is_the_least_squares_fix_of_later_columns():
    """One weight pruned per row: SparseGPT's compensation equals least squares over the
    columns to its right (earlier columns are frozen by design), with negligible damping."""
    w, x = _layer(seed=3, rows=6, cols=24, tokens=256)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(4))  # well conditioned
    per_row = [slice(r, r + 1) for r in range(6)]
    cfg = SparseGPTConfig(sparsity=1 / 24, blocksize=24, damp=1e-9)
    w_hat, keep = solve(w, 2 * x.T @ x, cfg, per_row)
    xd = x.double()
    for r in range(6):
        (j,) = (~keep[r]).nonzero().flatten().tolist()
        assert torch.equal(w_hat[r, :j], w[r, :j])
        target = xd @ w[r].double() - xd[:, :j] @ w[r, :j].double()
        best = torch.linalg.lstsq(xd[:, j + 1 :], target.unsqueeze(1)).solution.flatten()
        torch.testing.assert_close(w_hat[r, j + 1 :].double(), best, rtol=1e-4, atol=1e-4)

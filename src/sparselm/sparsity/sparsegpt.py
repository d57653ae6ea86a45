"""SparseGPT: one-shot pruning that compensates each pruned weight with the ones not yet visited.

For one linear layer with weight W (out x in) and calibration inputs X (tokens x in), the
Hessian of the layer-wise reconstruction error ||W X^T - Ŵ X^T||² is H = 2 XᵀX. Columns are
visited left to right in blocks; within a block each pruned weight's error is pushed onto the
remaining columns of its row through the upper Cholesky factor of H⁻¹ (the OBS update, done
row-parallel because every row shares H). Masks are chosen per block by the OBS saliency
w² / [H⁻¹]_jj², or per group of M inputs for N:M.

Layers are pruned in order: the calibration inputs of layer l+1 come from the model whose
layers <= l are already pruned. Deliberate choices:

* exact counts: an unstructured target keeps exactly ``kept_count(numel, 1 - s)`` weights,
  split over column blocks in proportion to their width (the reference's per-block threshold
  is only approximately exact); Q, K and V slices of a fused matrix are counted separately;
* a dead input (H_jj = 0) gets H_jj = 1 and keeps its weight (the reference zeroes it, which
  would put zeros outside the mask); it sees no calibration signal either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sparselm.errors import ConfigError
from sparselm.model import BlockLinear
from sparselm.sparsity.masks import kept_count
from sparselm.sparsity.pruning import NM, check_sparsity


@dataclass(frozen=True)
class SparseGPTConfig:
    sparsity: float = 0.5  # unstructured, per target; ignored when nm is set
    nm: NM | None = None  # keep N of every M inputs
    blocksize: int = 128
    damp: float = 0.01  # fraction of mean(diag(H)) added to the diagonal

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        if self.blocksize < 1:
            raise ConfigError(f"prune.blocksize={self.blocksize} must be >= 1")
        if self.damp <= 0:
            raise ConfigError(f"prune.damp={self.damp} must be > 0")


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U of (H + damp·mean(diag H)·I)⁻¹, i.e. U^T U = H⁻¹."""
    h = hessian.double().clone()
    diag = torch.diagonal(h)
    diag[diag == 0] = 1.0  # dead inputs: keep H invertible
    diag += damp * diag.mean()
    inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inv, upper=True).float()


def _block_prune_counts(total: int, cols: int, blocksize: int) -> list[int]:
    """Split ``total`` pruned entries over column blocks in proportion to their width."""
    edges = list(range(0, cols, blocksize)) + [cols]
    cum = [round(total * e / cols) for e in edges]
    return [b - a for a, b in zip(cum, cum[1:], strict=False)]


def _select_unstructured(
    saliency: torch.Tensor, groups: Sequence[slice], counts: Sequence[int]
) -> torch.Tensor:
    """Prune mask (True = pruned): the ``count`` least salient entries of each row group."""
    pruned = torch.zeros_like(saliency, dtype=torch.bool)
    for rows, k in zip(groups, counts, strict=True):
        if k > 0:
            flat = saliency[rows].flatten()
            idx = torch.topk(flat, k, largest=False, sorted=False).indices
            pruned[rows].view(-1)[idx] = True
    return pruned


@torch.no_grad()
def sparsegpt_solve(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    cfg: SparseGPTConfig,
    groups: Sequence[slice] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune one layer; returns (updated weight, keep mask). ``groups`` are row slices counted
    separately (Q/K/V of a fused matrix); the default is the whole matrix."""
    w = weight.detach().float().clone()
    rows, cols = w.shape
    groups = list(groups) if groups is not None else [slice(0, rows)]
    u = inverse_hessian_factor(hessian.to(w.device), cfg.damp).to(w.device)
    block = cfg.blocksize
    if cfg.nm is not None:
        n, m = cfg.nm
        if cols % m:
            raise ConfigError(f"prune.nm={n}:{m}: input dimension {cols} is not a multiple of {m}")
        block = max(m, block - block % m)  # an N:M group never straddles two blocks
    per_block = [
        _block_prune_counts(
            (g.stop - g.start) * cols - kept_count((g.stop - g.start) * cols, 1 - cfg.sparsity),
            cols,
            block,
        )
        for g in groups
    ]
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for b, i1 in enumerate(range(0, cols, block)):
        i2 = min(i1 + block, cols)
        counts = [c[b] for c in per_block]
        pruned[:, i1:i2], err = _prune_block(w, u, i1, i2, cfg.nm, groups, counts)
        # push the block's accumulated error onto every column to its right
        w[:, i2:] -= err @ u[i1:i2, i2:]
    return w.to(weight.dtype), ~pruned


def _prune_block(
    w: torch.Tensor,
    u: torch.Tensor,
    i1: int,
    i2: int,
    nm: NM | None,
    groups: Sequence[slice],
    counts: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """OBS over columns i1..i2 of w (edited in place); returns (pruned mask, scaled errors)."""
    w1 = w[:, i1:i2]  # a view: updates land in w
    u1 = u[i1:i2, i1:i2]
    d = torch.diagonal(u1)
    err = torch.zeros_like(w1)
    pruned = torch.zeros_like(w1, dtype=torch.bool)
    if nm is None:
        pruned = _select_unstructured(w1**2 / d.unsqueeze(0) ** 2, groups, counts)
    for j in range(i2 - i1):
        if nm is not None and j % nm[1] == 0:
            n, m = nm
            sal = w1[:, j : j + m] ** 2 / d[j : j + m].unsqueeze(0) ** 2
            drop = torch.topk(sal, m - n, dim=1, largest=False).indices
            pruned[:, j : j + m].scatter_(1, drop, True)
        col = w1[:, j]
        q = torch.where(pruned[:, j], torch.zeros_like(col), col)
        e = (col - q) / d[j]
        w1[:, j:] -= e.unsqueeze(1) * u1[j, j:].unsqueeze(0)
        w1[:, j] = q  # exactly zero where pruned, untouched by float rounding
        err[:, j] = e
    return pruned, err


class HessianCollector:
    """Forward hooks that accumulate H = 2 XᵀX / n_tokens of each module's input."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.hessians: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            h = self.hessians.get(name)
            n = self.tokens.get(name, 0)
            total = n + x.shape[0]
            # running mean, so the scale does not grow with the calibration set
            update = 2.0 * (x.T @ x) / total
            self.hessians[name] = update if h is None else h * (n / total) + update
            self.tokens[name] = total

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class _LayerDone(Exception):
    """Raised by a hook once every target of the layer has seen its input: stops the forward."""


def _module_name(target: BlockLinear) -> str:
    return target.name.removesuffix(".weight")


@torch.no_grad()
def collect_hessians(
    model: nn.Module, modules: dict[str, nn.Module], calibration: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Run the calibration batches until every listed module has seen its input."""
    collector = HessianCollector(modules)
    seen: set[str] = set()

    def stop_when_done(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen.add(name)
            if len(seen) == len(modules):
                raise _LayerDone  # later layers are not needed for this layer's Hessians

        return hook

    stops = [m.register_forward_hook(stop_when_done(n)) for n, m in modules.items()]
    device = next(model.parameters()).device
    try:
        for x in calibration:
            seen.clear()
            try:
                model(x.to(device))
            except _LayerDone:
                pass
    finally:
        collector.remove()
        for handle in stops:
            handle.remove()
    return collector.hessians


@torch.no_grad()
def sparsegpt_prune(
    model: nn.Module,
    targets: Sequence[BlockLinear],
    calibration: Iterable[torch.Tensor],
    cfg: SparseGPTConfig,
) -> list[torch.Tensor]:
    """Prune ``targets`` layer by layer in place; return one keep mask per target, in order.

    ``calibration`` holds token batches (B x T). Targets sharing a parameter (Q, K, V) are
    solved together, each slice with its own exact count.
    """
    calibration = list(calibration)
    was_training = model.training
    model.eval()
    masks: dict[int, torch.Tensor] = {}
    for layer in sorted({t.layer for t in targets}):
        in_layer = [(i, t) for i, t in enumerate(targets) if t.layer == layer]
        by_module: dict[str, list[tuple[int, BlockLinear]]] = {}
        for i, t in in_layer:
            by_module.setdefault(_module_name(t), []).append((i, t))
        modules = {name: model.get_submodule(name) for name in by_module}
        hessians = collect_hessians(model, modules, calibration)
        for name, members in by_module.items():
            weight = members[0][1].weight
            rows = [t.rows for _, t in members]
            new_w, keep = sparsegpt_solve(weight[_span(rows)], hessians[name], cfg, _rebase(rows))
            weight[_span(rows)] = new_w
            for (i, _), r in zip(members, _rebase(rows), strict=True):
                masks[i] = keep[r].cpu()
    model.train(was_training)
    return [masks[i] for i in range(len(targets))]


def _span(rows: Sequence[slice]) -> slice:
    return slice(min(r.start for r in rows), max(r.stop for r in rows))


def _rebase(rows: Sequence[slice]) -> list[slice]:
    lo = min(r.start for r in rows)
    return [slice(r.start - lo, r.stop - lo) for r in rows]

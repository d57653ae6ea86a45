"""A dense GPT-2-style decoder (pre-LN, GELU, learned positions, tied embeddings).

The model knows nothing of sparsity or of any training method. It exposes what methods need:

* ``block_linears()``: every transformer-block weight tagged by layer and kind
  (q, k, v, attn_out, mlp_in, mlp_out). Q, K and V live in one fused matrix but each is
  addressable as its own row slice.
* ``forward(..., plan=...)``: which blocks run, in which order, and with what residual scale.
* ``forward(..., attn_mask=...)``: an attention mask for every layer, or one per layer; a
  mask is a boolean tensor or an ``AttentionFn`` that computes attention itself.
* ``forward(..., return_hidden=True)``: one hidden state per executed block, as HF GPT-2's
  ``hidden_states[1:]``: the residual stream after each block, the last one after the final
  LayerNorm (what SquareHead distils, squarehead.md §2.1).
* ``forward(..., labels=y, head_loss=fn)``: the loss ``fn(final hidden, head weight, y)``
  instead of the logits, so a loss that never builds the full logits (``lm_head_loss.py``)
  runs inside the forward pass, where DDP and FSDP expect every parameter to be used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

LINEAR_KINDS = ("q", "k", "v", "attn_out", "mlp_in", "mlp_out")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    n_layer: int
    n_head: int
    d_model: int
    d_ff: int
    block_size: int
    bias: bool = True
    dropout: float = 0.0
    ln_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}"
            )


@dataclass(frozen=True)
class BlockLinear:
    """One sparsifiable block weight: ``weight[rows]`` is the matrix of this kind."""

    name: str  # parameter name in model.named_parameters()
    layer: int
    kind: str
    weight: nn.Parameter
    rows: slice

    @property
    def shape(self) -> tuple[int, int]:
        n_out = self.rows.stop - self.rows.start
        return (n_out, self.weight.shape[1])

    def view(self) -> torch.Tensor:
        return self.weight[self.rows]


@dataclass
class GPTOutput:
    logits: torch.Tensor | None
    hidden_states: list[torch.Tensor] | None = None
    loss: torch.Tensor | None = None


class HeadLoss(Protocol):
    """(final hidden states, LM head weight, labels) -> mean loss."""

    def __call__(
        self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor: ...


# A plan lists (layer index, residual scale) for the blocks to run, in order.
BlockPlan = Sequence[tuple[int, float]]


class AttentionFn(Protocol):
    """Computes attention itself: (B, heads, T, head_dim) q, k, v -> the same shape."""

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float
    ) -> torch.Tensor: ...


AttnMask = torch.Tensor | AttentionFn | None


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.d_model = cfg.d_model
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: AttnMask = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif isinstance(attn_mask, torch.Tensor):
            # a boolean pattern (True = may attend); causality is the caller's job
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            y = attn_mask(q, k, v, p)
        return self.out(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.fc_out = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc_out(F.gelu(self.fc_in(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: AttnMask = None, scale: float = 1.0
    ) -> torch.Tensor:
        h = x + self.resid_drop(self.attn(self.ln_1(x), attn_mask))
        h = h + self.mlp(self.ln_2(h))
        # a residual scale c gives x + c * F(x): the whole block's update is scaled (RaPTr)
        return h if scale == 1.0 else x + scale * (h - x)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embedding
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated normal (±2σ) init; residual output projections scaled by 1/sqrt(2L)."""
        std = self.config.init_std
        resid_std = std / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                if name.endswith("weight"):  # LayerNorm gain
                    nn.init.ones_(p)
                else:
                    nn.init.zeros_(p)
                continue
            s = resid_std if name.endswith(("attn.out.weight", "mlp.fc_out.weight")) else std
            nn.init.trunc_normal_(p, mean=0.0, std=s, a=-2 * s, b=2 * s)

    def block_linears(self) -> list[BlockLinear]:
        """The sparsifiable block weights, in layer order; embeddings and head excluded."""
        d = self.config.d_model
        out: list[BlockLinear] = []
        for i, blk in enumerate(self.blocks):
            prefix = f"blocks.{i}"
            for j, kind in enumerate(("q", "k", "v")):
                out.append(
                    BlockLinear(
                        f"{prefix}.attn.qkv.weight",
                        i,
                        kind,
                        blk.attn.qkv.weight,
                        slice(j * d, (j + 1) * d),
                    )
                )
            for kind, mod, pname in (
                ("attn_out", blk.attn.out, "attn.out"),
                ("mlp_in", blk.mlp.fc_in, "mlp.fc_in"),
                ("mlp_out", blk.mlp.fc_out, "mlp.fc_out"),
            ):
                out.append(
                    BlockLinear(
                        f"{prefix}.{pname}.weight",
                        i,
                        kind,
                        mod.weight,
                        slice(0, mod.weight.shape[0]),
                    )
                )
        return out

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def forward(
        self,
        idx: torch.Tensor,
        plan: BlockPlan | None = None,
        attn_mask: AttnMask | Sequence[AttnMask] = None,
        return_hidden: bool = False,
        labels: torch.Tensor | None = None,
        head_loss: HeadLoss | None = None,
    ) -> GPTOutput:
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds model.block_size={self.config.block_size}"
            )
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        per_layer = isinstance(attn_mask, (list, tuple))
        hidden: list[torch.Tensor] | None = [] if return_hidden else None
        steps = plan if plan is not None else [(i, 1.0) for i in range(len(self.blocks))]
        for layer, scale in steps:
            mask = attn_mask[layer] if per_layer else attn_mask
            x = self.blocks[layer](x, mask, scale)
            if hidden is not None:
                hidden.append(x)
        final = self.ln_f(x)
        if hidden:  # HF's last hidden state is the normed one: the head's input
            hidden[-1] = final
        if head_loss is not None and labels is not None:
            loss = head_loss(final, self.lm_head.weight, labels)
            return GPTOutput(logits=None, hidden_states=hidden, loss=loss)
        logits = self.lm_head(final)
        return GPTOutput(logits=logits, hidden_states=hidden)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; label -100 is ignored (context and padding).

    The softmax runs in at least fp32: bf16 logits are upcast, fp64 ones stay fp64."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100
    )

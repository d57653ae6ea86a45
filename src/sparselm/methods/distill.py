"""Knowledge distillation from a frozen dense teacher: CE, logit KL and SquareHead.

SquareHead (Kurtic et al. 2023) adds, for every block l, the student's normalised squared
error on the hidden state, over non-padding tokens:

    L_sq = Σ_l mean((h_l^S - h_l^T)²) / (mean((h_l^T)²) + eps)

summed (not averaged) over layers. The total objective is
``λ_ce·CE + λ_kl·T²·KL(p_T || p_S) + λ_sq·L_sq``.

Hidden states are whatever the model returns for ``return_hidden=True``: the reference's
``hidden_states[1:]`` (squarehead.md §2.1), i.e. the residual stream after blocks 1..L-1 and
the output of block L after the final LayerNorm, for ``HFCausalLM`` and our GPT alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparselm.errors import ConfigError
from sparselm.hooks import TrainHook
from sparselm.model import lm_loss

IGNORE_INDEX = -100
BF16_EPS = torch.finfo(torch.bfloat16).eps  # the reference's eps (0.0078125)


class Teacher:
    """A frozen model: eval mode, no gradients, forward under ``no_grad`` with hidden states.

    Deliberately not an ``nn.Module`` attribute of anything, so it never enters the student's
    parameters, optimizer or checkpoint.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device | str) -> Teacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor) -> Any:
        self.model.eval()  # stays in eval even if someone called .train() on it
        return self.model(idx, return_hidden=True)


def ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over label tokens (the loop's own LM loss)."""
    return lm_loss(logits, labels)


def kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """T² · KL(softmax(z_T/T) || softmax(z_S/T)), summed over the vocabulary and averaged
    over label tokens (labels != -100); 0 when there are none."""
    keep = labels != IGNORE_INDEX
    if not keep.any():
        return student_logits.sum() * 0.0  # keeps the graph; nothing to distil
    s = F.log_softmax(student_logits[keep].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[keep].float() / temperature, dim=-1)
    per_token = (t.exp() * (t - s)).sum(dim=-1)
    return per_token.mean() * temperature**2


def squarehead(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    token_mask: torch.Tensor,
    eps: float = BF16_EPS,
) -> torch.Tensor:
    """Σ_l mean((h_s - h_t)²) / (mean(h_t²) + eps) over the tokens where ``token_mask`` holds."""
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError(
            f"student has {len(student_hidden)} hidden states, teacher {len(teacher_hidden)}"
        )
    total = student_hidden[0].new_zeros((), dtype=torch.float32)
    for hs, ht in zip(student_hidden, teacher_hidden, strict=True):
        s, t = hs[token_mask].float(), ht[token_mask].float()
        total = total + ((s - t) ** 2).mean() / ((t**2).mean() + eps)
    return total


def layerwise_error(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    token_mask: torch.Tensor,
) -> list[float]:
    """The SquareHead terms one by one without eps (the layer-wise error diagnostic)."""
    return [
        float(squarehead([s], [t], token_mask, eps=0.0))
        for s, t in zip(student_hidden, teacher_hidden, strict=True)
    ]


def nonpad_mask(labels: torch.Tensor) -> torch.Tensor:
    """Non-padding positions of right-padded batches: everything up to each row's last label.

    Fine-tuning batches label only the completion (prompt and padding are -100), and pad on
    the right; pretraining batches label every position, so all are kept.
    """
    labelled = labels != IGNORE_INDEX
    pos = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    last = torch.where(labelled, pos, torch.full_like(pos, -1)).amax(dim=1, keepdim=True)
    return pos <= last


@dataclass(frozen=True)
class DistillConfig:
    ce: float = 1.0
    kl: float = 0.0
    temperature: float = 1.0
    squarehead: float = 1.0
    eps: float = BF16_EPS

    def __post_init__(self) -> None:
        for key in ("ce", "kl", "squarehead"):
            value = getattr(self, key)
            if not value >= 0.0:
                raise ConfigError(f"distill.{key}={value} must be >= 0")
        if not self.temperature > 0.0:
            raise ConfigError(f"distill.temperature={self.temperature} must be > 0")
        if not self.eps >= 0.0:
            raise ConfigError(f"distill.eps={self.eps} must be >= 0")


class DistillationHook(TrainHook):
    """Adds the weighted distillation terms to the loop's LM loss.

    The loop always adds the plain LM loss as ``train_loss`` (weight 1). For λ_ce != 1 the hook
    returns ``loss_ce_adjust = (λ_ce - 1)·CE`` so that the optimised total is λ_ce·CE. The other
    returned terms are also weighted (``loss_kl = λ_kl·T²·KL``, ``loss_squarehead = λ_sq·L_sq``);
    terms with weight 0 are not computed. ``log_fields`` reports the weighted terms of the last
    step, ``loss_ce`` = λ_ce·CE included, so loss_ce + loss_kl + loss_squarehead = loss_total.
    """

    name = "distillation"

    def __init__(
        self,
        teacher: Teacher,
        cfg: DistillConfig,
        token_mask_fn: Callable[[torch.Tensor], torch.Tensor] = nonpad_mask,
    ) -> None:
        self.teacher = teacher
        self.cfg = cfg
        self.token_mask_fn = token_mask_fn
        self._sums: dict[str, float] = {}
        self._micro = 0

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.teacher.to(next(model.parameters()).device)

    def forward_kwargs(self, step: int) -> dict[str, Any]:
        self._sums, self._micro = {}, 0  # called once per step, before its micro-batches
        return {"return_hidden": True} if self.cfg.squarehead > 0 else {}

    def extra_losses(
        self, x: torch.Tensor, y: torch.Tensor, output: Any
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        terms: dict[str, torch.Tensor] = {}
        if cfg.ce != 1.0:
            ce_value = ce(output.logits, y)
            terms["loss_ce_adjust"] = (cfg.ce - 1.0) * ce_value
        else:  # only logged: the loop already trains on it, so keep no second graph
            with torch.no_grad():
                ce_value = ce(output.logits, y)
        if cfg.kl > 0 or cfg.squarehead > 0:
            t_out = self.teacher(x)
            if cfg.kl > 0:
                terms["loss_kl"] = cfg.kl * kl(output.logits, t_out.logits, y, cfg.temperature)
            if cfg.squarehead > 0:
                mask = self.token_mask_fn(y)
                sq = squarehead(output.hidden_states, t_out.hidden_states, mask, cfg.eps)
                terms["loss_squarehead"] = cfg.squarehead * sq
        logged = {"loss_ce": cfg.ce * ce_value.detach(), **terms}
        logged.pop("loss_ce_adjust", None)
        for k, v in logged.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach())
        self._micro += 1
        return terms

    def flop_factors(self, step: int) -> dict[str, Any]:
        # KL and SquareHead run the frozen dense teacher's forward on every token
        return {"teacher_forwards": 1.0} if self.cfg.kl > 0 or self.cfg.squarehead > 0 else {}

    def log_fields(self, step: int) -> dict[str, Any]:
        return {k: v / max(1, self._micro) for k, v in self._sums.items()}

"""A Hugging Face causal LM behind the interface of our GPT, so masks, pruning and
distillation work on it unchanged.

* ``block_linears()`` finds the block weights by module-name pattern (GPT-2; Llama-class
  models: Llama, Mistral, Qwen2). A fused QKV module is split into equal row slices.
* ``forward(idx, return_hidden=...)`` returns ``.logits`` and, on request, HF's
  ``hidden_states[1:]`` (index 0 is the embedding output; the last entry follows the final
  norm), which is what the SquareHead reference distils.

GPT-2 stores its linears as ``Conv1D`` with (in, out) weights. The wrapper swaps them for
``nn.Linear`` with the transposed weight (same function) at construction, so that every
matrix is (out, in) and a Q/K/V slice is a row slice, as ``BlockLinear`` and ``MaskSet``
assume. ``unwrap()`` restores HF's own layout, e.g. before ``save_pretrained``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from sparselm.errors import ConfigError
from sparselm.model import BlockLinear, GPTOutput

# (module-name pattern with the layer index as group 1, kinds of its row slices in order)
BLOCK_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # GPT-2
    (r"transformer\.h\.(\d+)\.attn\.c_attn", ("q", "k", "v")),
    (r"transformer\.h\.(\d+)\.attn\.c_proj", ("attn_out",)),
    (r"transformer\.h\.(\d+)\.mlp\.c_fc", ("mlp_in",)),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj", ("mlp_out",)),
    # Llama-class (gate and up both read the block input: both count as mlp_in)
    (r"model\.layers\.(\d+)\.self_attn\.q_proj", ("q",)),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj", ("k",)),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj", ("v",)),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj", ("attn_out",)),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj", ("mlp_in",)),
    (r"model\.layers\.(\d+)\.mlp\.up_proj", ("mlp_in",)),
    (r"model\.layers\.(\d+)\.mlp\.down_proj", ("mlp_out",)),
)


def _conv1d_to_linear(conv: Conv1D) -> nn.Linear:
    n_in, n_out = conv.weight.shape
    w = conv.weight
    linear = nn.Linear(n_in, n_out, bias=conv.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        linear.weight.copy_(w.T)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


def _linear_to_conv1d(linear: nn.Linear) -> Conv1D:
    n_out, n_in = linear.weight.shape
    conv = Conv1D(n_out, n_in).to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _swap(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


class HFCausalLM(nn.Module):
    """Wraps a ``transformers`` causal LM; its parameters are named ``hf.<HF name>``."""

    def __init__(self, hf_model: PreTrainedModel) -> None:
        super().__init__()
        self.hf = hf_model
        self._converted = [n for n, m in hf_model.named_modules() if isinstance(m, Conv1D)]
        for name in self._converted:
            _swap(hf_model, name, _conv1d_to_linear(hf_model.get_submodule(name)))
        if not self.block_linears():
            raise ConfigError(
                f"model: {type(hf_model).__name__} has no block linears matching "
                "sparselm.hf_causal.BLOCK_PATTERNS (supported: GPT-2, Llama-class)"
            )

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> HFCausalLM:
        return cls(AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs))

    @property
    def lm_head(self) -> nn.Module:
        return self.hf.get_output_embeddings()

    @property
    def n_head(self) -> int:
        """Attention heads (the FLOP ledger's chinchilla convention counts softmax per head)."""
        config = self.hf.config
        return int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 1))

    def block_linears(self) -> list[BlockLinear]:
        """Block weights ordered by layer, then by module order; embeddings and head excluded."""
        found: list[tuple[int, int, BlockLinear]] = []
        for order, (name, module) in enumerate(self.hf.named_modules()):
            for pattern, kinds in BLOCK_PATTERNS:
                match = re.fullmatch(pattern, name)
                if match is None or not isinstance(module, nn.Linear):
                    continue
                layer = int(match.group(1))
                rows = module.weight.shape[0] // len(kinds)
                for j, kind in enumerate(kinds):
                    part = slice(j * rows, (j + 1) * rows)
                    found.append(
                        (
                            layer,
                            order,
                            BlockLinear(f"hf.{name}.weight", layer, kind, module.weight, part),
                        )
                    )
        return [bl for _, _, bl in sorted(found, key=lambda f: (f[0], f[1]))]

    def forward(
        self,
        idx: torch.Tensor,
        return_hidden: bool = False,
        attention_mask: torch.Tensor | None = None,
    ) -> GPTOutput:
        out = self.hf(
            input_ids=idx,
            attention_mask=attention_mask,
            output_hidden_states=return_hidden,
            use_cache=False,
        )
        hidden = list(out.hidden_states[1:]) if return_hidden else None
        return GPTOutput(logits=out.logits, hidden_states=hidden)

    def unwrap(self) -> PreTrainedModel:
        """The HF model in its native layout (Conv1D restored); this wrapper is spent after."""
        for name in self._converted:
            _swap(self.hf, name, _linear_to_conv1d(self.hf.get_submodule(name)))
        self._converted = []
        return self.hf

"""Export a trained sparselm GPT as a Hugging Face ``GPT2LMHeadModel`` plus its tokenizer.

Our GPT is GPT-2's architecture (pre-LN, tanh-GELU, learned positions, tied head), so the
export is a pure weight rename. HF GPT-2 stores its linears as ``Conv1D`` with weights of
shape (in, out), the transpose of ``nn.Linear``; the fused ``qkv`` rows [q;k;v] become
``c_attn`` columns in the same order, which is how HF splits them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from sparselm.errors import ConfigError
from sparselm.loading import load_trained
from sparselm.model import GPT
from sparselm.tokenizer import EOT, eot_id

# (our module suffix, HF module suffix, is a Conv1D in HF) inside each block
_BLOCK_MAP = (
    ("ln_1", "ln_1", False),
    ("attn.qkv", "attn.c_attn", True),
    ("attn.out", "attn.c_proj", True),
    ("ln_2", "ln_2", False),
    ("mlp.fc_in", "mlp.c_fc", True),
    ("mlp.fc_out", "mlp.c_proj", True),
)


def hf_config(model: GPT, eos_token_id: int | None = None) -> GPT2Config:
    """The GPT2Config that reproduces ``model``; bias-free models have no HF GPT-2 equivalent."""
    cfg = model.config
    if not cfg.bias:
        raise ConfigError("model.bias=false cannot be exported: HF GPT-2 always has biases")
    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.d_ff,
        activation_function="gelu_new",  # tanh-approximate GELU, as in our MLP
        layer_norm_epsilon=cfg.ln_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=cfg.init_std,
        tie_word_embeddings=True,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
    )


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under HF GPT-2 names (``lm_head`` omitted: it is tied to ``wte``)."""
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {
        "transformer.wte.weight": ours["wte.weight"],
        "transformer.wpe.weight": ours["wpe.weight"],
        "transformer.ln_f.weight": ours["ln_f.weight"],
        "transformer.ln_f.bias": ours["ln_f.bias"],
    }
    for i in range(model.config.n_layer):
        for src, dst, conv1d in _BLOCK_MAP:
            weight = ours[f"blocks.{i}.{src}.weight"]
            out[f"transformer.h.{i}.{dst}.weight"] = weight.t() if conv1d else weight
            out[f"transformer.h.{i}.{dst}.bias"] = ours[f"blocks.{i}.{src}.bias"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def to_hf_gpt2(model: GPT, eos_token_id: int | None = None) -> GPT2LMHeadModel:
    """A float32 ``GPT2LMHeadModel`` in eval mode computing the same logits as ``model``."""
    hf = GPT2LMHeadModel(hf_config(model, eos_token_id))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    # the tied head is the only HF parameter we do not write ourselves
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ConfigError(f"HF GPT-2 layout mismatch: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.float().eval()


def export_checkpoint(path: Path, out_dir: Path) -> Path:
    """Write ``save_pretrained`` model + tokenizer for a run/checkpoint folder; returns out_dir."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    model, tok, _ = load_trained(Path(path))
    eos = eot_id(tok)
    hf_model = to_hf_gpt2(model, eos_token_id=eos)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOT,
        bos_token=EOT,
        unk_token=EOT,
        model_max_length=model.config.block_size,
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp"))
    try:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        hf_tok.save_pretrained(tmp)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace anything that is not an empty folder or an earlier export."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"out={out_dir}: exists and is not a folder")
    if any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise ConfigError(
            f"out={out_dir}: is a non-empty folder that is not an earlier export; "
            "choose a new or empty folder"
        )


def _swap_in(tmp: Path, out_dir: Path) -> None:
    # os.replace cannot overwrite a non-empty folder, so move the old export aside first
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old"))
        os.replace(out_dir, old / "export")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

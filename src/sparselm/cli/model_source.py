"""Where a fine-tuning job's starting model comes from: one of our runs, or a Hugging Face
causal LM on disk (``model=hf model.path=...``). Both come back behind the same interface."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tokenizers import Tokenizer
from torch import nn

from sparselm.errors import ConfigError
from sparselm.loading import TOKENIZER_FILE, load_trained, tokenizer_path_of
from sparselm.tokenizer import eot_id, load_tokenizer

HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


@dataclass
class ModelSource:
    model: nn.Module  # GPT or HFCausalLM, in eval mode
    tokenizer: Tokenizer
    eos_id: int  # ends every completion and pads batches
    max_len: int  # longest sequence the model takes
    family: str  # "sparselm" | "hf"
    origin: Path  # checkpoint folder or HF model folder
    hf_eos: bool  # True: the prompt's leading EOT is the model's EOS id, not our EOT text

    def copy_tokenizer(self, run_dir: Path) -> None:
        """Put the tokenizer beside the run's outputs (evaluation reads it from there)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.family == "sparselm":
            shutil.copyfile(tokenizer_path_of(self.origin), run_dir / TOKENIZER_FILE)
        else:
            shutil.copyfile(self.origin / TOKENIZER_FILE, run_dir / TOKENIZER_FILE)


def is_hf(cfg: DictConfig) -> bool:
    return cfg.model.get("family", "sparselm") == "hf"


def load_source(cfg: DictConfig, device: torch.device, teacher_key: str = "teacher") -> ModelSource:
    """Our run at ``cfg.<teacher_key>``, or the HF model at ``cfg.model.path`` (model=hf)."""
    if is_hf(cfg):
        return _load_hf(cfg, device)
    path = cfg.get(teacher_key)
    if not path:
        raise ConfigError(
            f"{teacher_key} is not set: give the dense run folder ({teacher_key}=...) "
            "or a Hugging Face model (model=hf model.path=...)"
        )
    model, tok, ckpt = load_trained(Path(path), device)
    return ModelSource(
        model, tok, eot_id(tok), model.config.block_size, "sparselm", ckpt, hf_eos=False
    )


def _load_hf(cfg: DictConfig, device: torch.device) -> ModelSource:
    from sparselm.hf_causal import HFCausalLM  # imports transformers: only when asked

    path = Path(str(cfg.model.get("path") or ""))
    if not str(cfg.model.get("path") or "") or not (path / "config.json").is_file():
        raise ConfigError(
            f"model.path={cfg.model.get('path')!r}: not a Hugging Face model folder "
            "(expected config.json inside)"
        )
    if not (path / TOKENIZER_FILE).is_file():
        raise ConfigError(f"model.path={path}: has no {TOKENIZER_FILE} (a fast tokenizer)")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(cfg.model.dtype)
    if dtype is None:
        raise ConfigError(f"model.dtype={cfg.model.dtype!r} is unknown; allowed: float32, bfloat16")
    model = HFCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
    hf_cfg = model.hf.config
    eos = hf_cfg.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    if eos is None:
        raise ConfigError(f"model.path={path}: config.json has no eos_token_id")
    max_len = getattr(hf_cfg, "n_positions", None) or getattr(
        hf_cfg, "max_position_embeddings", 2048
    )
    return ModelSource(model, load_tokenizer(path), int(eos), int(max_len), "hf", path, hf_eos=True)


def save_hf_model(source: ModelSource, model: nn.Module, out: Path) -> Path:
    """Write the fine-tuned HF model in its native format (score it with lm-eval's ``hf``)."""
    out.mkdir(parents=True, exist_ok=True)
    model.unwrap().save_pretrained(out)
    for name in HF_TOKENIZER_FILES:
        if (source.origin / name).is_file():
            shutil.copyfile(source.origin / name, out / name)
    return out

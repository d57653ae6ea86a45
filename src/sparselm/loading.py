"""Load a trained model and its tokenizer from a run folder or a checkpoint folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tokenizers import Tokenizer

from sparselm.checkpoint import latest_checkpoint, load_model_weights, read_state
from sparselm.errors import CheckpointError
from sparselm.model import GPT, GPTConfig
from sparselm.tokenizer import load_tokenizer

TOKENIZER_FILE = "tokenizer.json"


def resolve_checkpoint(path: Path) -> Path:
    """A run folder (its latest checkpoint) or a checkpoint folder; one-line error otherwise."""
    ckpt = latest_checkpoint(Path(path))
    if ckpt is None:
        raise CheckpointError(
            f"{path}: no complete checkpoint found (expected state.json or checkpoints/latest)"
        )
    return ckpt


def model_config_of(ckpt: Path) -> GPTConfig:
    meta = read_state(ckpt)
    if not meta.get("model_config"):
        raise CheckpointError(f"{ckpt}/state.json: has no model_config")
    return GPTConfig(**meta["model_config"])


def tokenizer_path_of(ckpt: Path) -> Path:
    """The tokenizer saved beside the checkpoint, or in the run folder that holds it."""
    for folder in (Path(ckpt), Path(ckpt).parent.parent):
        if (folder / TOKENIZER_FILE).is_file():
            return folder / TOKENIZER_FILE
    raise CheckpointError(f"{ckpt}: no {TOKENIZER_FILE} beside it or in its run folder")


def load_trained(path: Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer, Path]:
    """(model in eval mode, tokenizer, checkpoint folder) for a run or checkpoint folder."""
    ckpt = resolve_checkpoint(path)
    model = GPT(model_config_of(ckpt))
    load_model_weights(ckpt, model)
    return model.to(device).eval(), load_tokenizer(tokenizer_path_of(ckpt)), ckpt


def weights_sha256(ckpt: Path) -> str:
    """sha256 of the weights file, recorded beside every score so results trace to weights."""
    digest = hashlib.sha256()
    with (Path(ckpt) / "model.safetensors").open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

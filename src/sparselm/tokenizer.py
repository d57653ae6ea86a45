"""Byte-level BPE tokenizers (GPT-2 style): train, save, load and fingerprint."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sparselm.errors import DataError

EOT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a GPT-2 style byte-level BPE; the same texts give byte-identical JSON."""
    if vocab_size < 257:
        # 256 byte symbols plus EOT is the floor; below it some bytes would be unencodable.
        raise ValueError(f"tokenizer.vocab_size must be >= 257, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],  # first special token gets id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    """Write `tok` as JSON atomically, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(tok.to_str())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """Load from a tokenizer.json, a directory holding one, or a Hugging Face Hub name."""
    path = Path(spec)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise DataError(f"{path}: not a valid tokenizer JSON ({exc})") from exc
    # Hub names look like "gpt2" or "org/name"; anything path-like must exist locally.
    text = str(spec)
    if isinstance(spec, Path) or text.endswith(".json") or text.startswith(("/", ".", "~")):
        raise DataError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_pretrained(str(spec))
    except Exception as exc:
        raise DataError(
            f"tokenizer {spec!r}: not a local file and could not be loaded from the Hugging Face "
            f"Hub (offline?): {exc}"
        ) from exc


def tokenizer_hash(tok: Tokenizer) -> str:
    """sha256 of the canonical JSON: identifies a vocabulary in shard manifests."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def eot_id(tok: Tokenizer) -> int:
    """Id of the end-of-text token that separates documents."""
    idx = tok.token_to_id(EOT)
    if idx is None:
        raise DataError(f"tokenizer has no {EOT!r} token")
    return idx

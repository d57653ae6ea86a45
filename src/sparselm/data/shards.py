"""Tokenized corpus splits stored as flat token files, read back as read-only memmaps.

Layout of `out_dir`: `{split}.bin` (raw little-endian uint16/uint32 tokens, EOT after every
document) and `manifest.json` (tokenizer hash, source, per-split counts). Every file is written
to a temporary name and renamed, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from sparselm.data.corpus import iter_documents
from sparselm.errors import DataError
from sparselm.tokenizer import eot_id, tokenizer_hash

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
ENCODE_CHUNK = 64  # documents per encode_batch call: parallel, but bounded memory


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id."""
    return np.dtype("<u2") if vocab_size < 2**16 else np.dtype("<u4")


def _chunks(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


def _atomic_tmp(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    return fd, Path(tmp)


def write_split(
    docs: Iterable[str],
    tok: Tokenizer,
    out_dir: Path,
    split: str,
    max_tokens: int | None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Tokenize `docs` into `{out_dir}/{split}.bin`, EOT after each, at most `max_tokens`."""
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens for split {split!r} must be positive or None")
    dtype = token_dtype(tok.get_vocab_size())
    eot = eot_id(tok)
    path = Path(out_dir) / f"{split}.bin"
    fd, tmp = _atomic_tmp(path)
    n_tokens = n_docs = 0
    bar = tqdm(desc=f"tokenize {split}", unit="doc", disable=not progress)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in _chunks(docs, ENCODE_CHUNK):
                for enc in tok.encode_batch(chunk, add_special_tokens=False):
                    ids = np.asarray(enc.ids + [eot], dtype=dtype)
                    if max_tokens is not None:
                        ids = ids[: max_tokens - n_tokens]
                    f.write(ids.tobytes())
                    n_tokens += len(ids)
                    n_docs += 1
                    if max_tokens is not None and n_tokens >= max_tokens:
                        break
                bar.update(len(chunk))
                if max_tokens is not None and n_tokens >= max_tokens:
                    break
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return {"file": path.name, "tokens": n_tokens, "dtype": dtype.name, "documents": n_docs}


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    fd, tmp = _atomic_tmp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_manifest(
    out_dir: Path, splits: dict[str, dict], tok: Tokenizer, source: str, extra: dict[str, Any]
) -> None:
    """Record what the split files hold, so a mismatched tokenizer is caught on load."""
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "tokenizer_hash": tokenizer_hash(tok),
        "vocab_size": tok.get_vocab_size(),
        "eot_id": eot_id(tok),
        "splits": splits,
        **extra,
    }
    _write_json_atomic(Path(out_dir) / MANIFEST, manifest)


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """Load `manifest.json` of a prepared corpus."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} not found: prepare the corpus first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise DataError(f"{path}: expected an object with a 'splits' mapping")
    return manifest


def open_split(out_dir: Path, split: str) -> np.memmap:
    """Memory-map `{split}.bin` read-only, checking its size against the manifest."""
    manifest = read_manifest(out_dir)
    info = manifest["splits"].get(split)
    if info is None:
        raise DataError(
            f"{Path(out_dir) / MANIFEST}: no split {split!r}; has {sorted(manifest['splits'])}"
        )
    path = Path(out_dir) / info["file"]
    if not path.is_file():
        raise DataError(f"{path} not found (listed in {MANIFEST}); prepare the corpus again")
    dtype = np.dtype(info["dtype"])
    expected = int(info["tokens"]) * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected or expected == 0:
        raise DataError(
            f"{path}: {actual} bytes but {MANIFEST} says {info['tokens']} tokens of "
            f"{dtype.name} ({expected} bytes); prepare the corpus again"
        )
    return np.memmap(path, dtype=dtype, mode="r", shape=(int(info["tokens"]),))


def _is_prepared(out_dir: Path, tok: Tokenizer, source: str, limits: dict) -> bool:
    try:
        manifest = read_manifest(out_dir)
        if (
            manifest.get("tokenizer_hash") != tokenizer_hash(tok)
            or manifest.get("source") != source
            or manifest.get("limits") != limits
        ):
            return False
        for split in limits:
            open_split(out_dir, split)
    except DataError:
        return False
    return True


def prepare_corpus(
    source: str,
    data_dir: Path,
    out_dir: Path,
    tok: Tokenizer,
    max_train_tokens: int | None,
    max_val_tokens: int | None,
    splits: Sequence[str] = ("train", "validation"),
    text_field: str = "text",
) -> dict[str, Any]:
    """Tokenize `splits` of `source` into `out_dir`; a no-op when already done identically.
    ``text_field``: the documents' key in a local JSONL corpus."""
    out_dir = Path(out_dir)
    limits = {s: (max_train_tokens if s == "train" else max_val_tokens) for s in splits}
    if _is_prepared(out_dir, tok, source, limits):
        return read_manifest(out_dir)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # stale manifest must not vouch for new files
    progress = sys.stderr.isatty()
    infos = {}
    for split in splits:
        docs = iter_documents(source, split, Path(data_dir), text_field)
        infos[split] = write_split(docs, tok, out_dir, split, limits[split], progress=progress)
        if infos[split]["tokens"] == 0:
            raise DataError(f"data source {source!r} split {split!r} produced no tokens")
    write_manifest(out_dir, infos, tok, source, {"limits": limits})
    return read_manifest(out_dir)

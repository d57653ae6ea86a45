"""Pretraining and perplexity corpora as streams of document texts.

Local sources read the offline copies under `data_dir` (see shared/data/README.md). Sources
without an official split get a deterministic one, so every run sees the same documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from sparselm.data.local_text import iter_local, jsonl_records, looks_like_path
from sparselm.errors import DataError

SOURCES = ("pg_books", "nltk_english_text", "tiny_shakespeare", "wikitext-2")
SPLITS = ("train", "validation", "test")
NLTK_FILES = ("abc", "inaugural", "movie_reviews", "state_union", "webtext")
# Per-mille buckets of sha256(id) for nltk_english_text: 98% / 1% / 1%.
NLTK_BOUNDS = {"train": (0, 980), "validation": (980, 990), "test": (990, 1000)}
# Character fractions of tiny_shakespeare's single file (nanoGPT-like 90/5/5).
SHAKESPEARE_BOUNDS = {"train": (0.0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1.0)}
WIKITEXT_FILES = {"validation": "wiki.valid.tokens", "test": "wiki.test.tokens"}


def is_local(source: str) -> bool:
    """A user's own .txt/.jsonl file or folder (``local_text.py``), not a named corpus."""
    return not source.startswith("hf:") and source not in SOURCES and looks_like_path(source)


def iter_documents(
    source: str, split: str, data_dir: Path, text_field: str = "text"
) -> Iterator[str]:
    """Yield the texts of `split` of `source`; `hf:<id>[:<config>]` streams from the Hub; a
    path reads a local .txt/.jsonl file or folder (``text_field``: the JSONL documents' key)."""
    if source.startswith("hf:"):
        return _iter_hf(source, split)
    if source not in SOURCES and not looks_like_path(source):
        raise DataError(
            f"data.source: unknown source {source!r}; allowed: {', '.join(SOURCES)}, "
            "hf:<dataset_id>[:<config>] or the path of a .txt/.jsonl file or folder"
        )
    if split not in SPLITS:
        raise DataError(f"data split {split!r} for {source}: expected one of {', '.join(SPLITS)}")
    if source not in SOURCES:
        return iter_local(source, split, text_field)
    data_dir = Path(data_dir)
    if source == "pg_books":
        path = _require(data_dir / "pg_books" / f"{split}.jsonl")
        return (record["text"] for record in _iter_jsonl_records(path))
    if source == "nltk_english_text":
        return _iter_nltk(data_dir / "nltk_english_text", split)
    if source == "tiny_shakespeare":
        return _iter_shakespeare(data_dir / "tiny_shakespeare" / "input.txt", split)
    return _iter_wikitext(data_dir / "wikitext-2" / "tokens", split)


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(
            f"data file not found: {path}; set paths.data_dir (env SPARSELM_DATA_DIR) to the "
            f"folder holding {path.parent.name}/"
        )
    return path


def _iter_jsonl_records(path: Path) -> Iterator[dict]:
    return jsonl_records(path, "text")


def nltk_split_of(doc_id: str) -> str:
    """Split of an nltk_english_text document, from a hash of its id (stable across runs)."""
    bucket = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") % 1000
    for split, (lo, hi) in NLTK_BOUNDS.items():
        if lo <= bucket < hi:
            return split
    raise AssertionError("bounds cover 0..999")


def _iter_nltk(folder: Path, split: str) -> Iterator[str]:
    paths = [_require(folder / f"{name}.jsonl") for name in NLTK_FILES]  # fail before streaming
    return _nltk_texts(paths, split)


def _nltk_texts(paths: list[Path], split: str) -> Iterator[str]:
    for path in paths:
        for record in _iter_jsonl_records(path):
            if not isinstance(record.get("id"), str):
                raise DataError(f"{path}: record without a string 'id' field")
            if nltk_split_of(record["id"]) == split:
                yield record["text"]


def _line_cut(text: str, fraction: float) -> int:
    """Index just after the first newline at or past `fraction` of the text."""
    if fraction <= 0.0:
        return 0
    if fraction >= 1.0:
        return len(text)
    nl = text.find("\n", int(len(text) * fraction))
    return len(text) if nl < 0 else nl + 1


def _iter_shakespeare(path: Path, split: str) -> Iterator[str]:
    text = _require(path).read_text(encoding="utf-8")
    lo, hi = SHAKESPEARE_BOUNDS[split]
    return iter([text[_line_cut(text, lo) : _line_cut(text, hi)]])


def _iter_wikitext(folder: Path, split: str) -> Iterator[str]:
    if split not in WIKITEXT_FILES:
        raise DataError(
            "wikitext-2 has no train split offline (only validation/test under "
            f"{folder}); use it for evaluation only"
        )
    return iter([_require(folder / WIKITEXT_FILES[split]).read_text(encoding="utf-8")])


def _iter_hf(source: str, split: str) -> Iterator[str]:
    parts = source[len("hf:") :].split(":", 1)
    if not parts[0]:
        raise DataError(f"data.source {source!r}: expected hf:<dataset_id>[:<config>]")
    try:
        import datasets  # optional, online only
    except ImportError as exc:
        raise DataError(f"data.source {source!r} needs the 'datasets' package") from exc
    config = parts[1] if len(parts) == 2 else None
    try:
        stream = datasets.load_dataset(parts[0], config, split=split, streaming=True)
    except Exception as exc:
        raise DataError(f"data.source {source!r} split {split!r}: could not load ({exc})") from exc
    return (row["text"] for row in stream)

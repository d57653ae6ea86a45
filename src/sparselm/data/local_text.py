"""A user's own text as a pretraining corpus: ``data.source=<path>``.

The path (absolute, or relative to the working directory) is a ``.txt`` file (one document),
a ``.jsonl`` file (one JSON object per line; its ``data.text_field`` is a document) or a folder
of such files, read recursively in sorted order of their relative paths. Hidden files and
other suffixes in a folder are ignored.

Splits: the documents, in that order, are cut at 90% and 95% of their characters, each cut
moved to the end of its line (as ``tiny_shakespeare``): train is the first 90%, validation the
next 5%, test the rest. One big file and many small records split alike, and every split is
a pure function of the content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from sparselm.errors import DataError

SUFFIXES = (".txt", ".jsonl")
BOUNDS = {"train": (0.0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1.0)}
_READ = 1 << 20


def looks_like_path(source: str) -> bool:
    """A path rather than a corpus name: a separator, a corpus suffix or an existing path."""
    if not source.strip():
        return False  # Path("") is the working directory
    return "/" in source or "\\" in source or source.endswith(SUFFIXES) or Path(source).exists()


def corpus_files(source: str) -> list[Path]:
    """The files of a local corpus, in reading order; a one-line error if there are none."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data.source={source}: no such file or folder ({path.absolute()})")
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(
                f"data.source={source}: a local corpus is a .txt or .jsonl file or a folder of them"
            )
        return [path]
    files = sorted(
        (
            p
            for p in path.rglob("*")
            if p.suffix in SUFFIXES and p.is_file() and not _hidden(p, path)
        ),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not files:
        raise DataError(f"data.source={source}: the folder holds no .txt or .jsonl file")
    return files


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def fingerprint(source: str, text_field: str = "text") -> str:
    """sha256 of the corpus content (file names relative to the source, bytes, text field):
    caches keyed on it are rebuilt when any file changes, moves, appears or disappears, and
    reused when only the modification time or the source's location changes."""
    root = Path(source).expanduser()
    h = hashlib.sha256(f"local-text-v1\0{text_field}\0".encode())
    for file in corpus_files(source):
        name = file.name if file == root else file.relative_to(root).as_posix()
        h.update(f"{name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as f:
            while chunk := f.read(_READ):
                h.update(chunk)
    return h.hexdigest()


def cache_tag(source: str, text_field: str = "text") -> str:
    """A file-name-safe name for prepared outputs: the corpus's name and content hash."""
    stem = Path(source).expanduser().resolve().name.replace(".", "_") or "corpus"
    return f"local-{stem}-{fingerprint(source, text_field)[:16]}"


def documents(files: list[Path], text_field: str) -> Iterator[str]:
    """Every document of ``files`` in order; an empty file or a bad line names where it is."""
    for file in files:
        count = 0
        for text in _jsonl_texts(file, text_field) if file.suffix == ".jsonl" else _txt(file):
            count += 1
            yield text
        if count == 0:
            raise DataError(f"{file}: empty file (a local corpus file needs some text)")


def _txt(file: Path) -> Iterator[str]:
    text = file.read_text(encoding="utf-8")
    if text.strip():
        yield text


def _jsonl_texts(file: Path, field: str) -> Iterator[str]:
    return (record[field] for record in jsonl_records(file, field, key="data.text_field"))


def jsonl_records(file: Path, field: str, key: str = "") -> Iterator[dict]:
    """The objects of a JSONL file, each checked to hold a string ``field``; ``key`` names the
    config key that chose the field, for the error."""
    with file.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{file}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise DataError(
                    f"{file}:{lineno}: expected an object with a string {field!r} field"
                    + (f" ({key})" if key else "")
                )
            yield record


def iter_local(source: str, split: str, text_field: str = "text") -> Iterator[str]:
    """The texts of ``split``; reads the corpus once now (checking every file) to size it."""
    files = corpus_files(source)
    total = sum(len(text) for text in documents(files, text_field))
    return _pieces(source, split, files, text_field, total)


def _end_of_line(text: str, start: int, target: int) -> int:
    """The corpus offset just past the first newline at or after ``target`` in this document,
    or the document's end."""
    nl = text.find("\n", target - start)
    return start + (len(text) if nl < 0 else nl + 1)


def _pieces(
    source: str, split: str, files: list[Path], text_field: str, total: int
) -> Iterator[str]:
    lo, hi = (int(total * f) for f in BOUNDS[split])
    cut_lo = 0 if lo == 0 else None  # corpus offsets of the split's ends, once found
    cut_hi = total if hi >= total else None
    pos, found = 0, False
    for text in documents(files, text_field):
        start, end = pos, pos + len(text)
        pos = end
        if cut_lo is None and lo < end:
            cut_lo = _end_of_line(text, start, lo)
        if cut_hi is None and hi < end:
            cut_hi = _end_of_line(text, start, hi)
        if cut_lo is None:
            continue
        a, b = max(start, cut_lo), min(end, cut_hi if cut_hi is not None else end)
        if b > a:
            found = True
            yield text[a - start : b - start]
        if cut_hi is not None and cut_hi <= end:
            break
    if not found:
        raise DataError(
            f"data.source={source}: no text for the {split} split (characters {lo}-{hi} of "
            f"{total}, cut at line ends); the corpus needs more text or more lines"
        )

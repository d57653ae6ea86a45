"""Pinned, checksummed download of the suite's datasets into the data directory.

`registry.yaml` (next to this module) lists every file the suite may read, relative to
`paths.data_dir` (env SPARSELM_DATA_DIR), with its sha256. Byte-for-byte originals are fetched from
raw.githubusercontent.com at the commit named in the dataset README. Derived files are rebuilt
only where a converter below reproduces them exactly from a registered original; the others
(E2E train, HellaSwag, NLTK, PG books) cannot be fetched and must be placed by hand.

    python -m sparselm.data.download e2e_nlg dart --data-dir data [--verify]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sparselm.errors import DataError

Fetcher = Callable[[str], bytes]

_HINT = "place it there or point paths.data_dir (SPARSELM_DATA_DIR) at a copy"
_CHUNK = 1 << 20


@lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, Any]]:
    text = resources.files("sparselm.data").joinpath("registry.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["datasets"]


DATASETS: tuple[str, ...] = tuple(_registry())


def _dataset(dataset: str) -> dict[str, Any]:
    spec = _registry().get(dataset)
    if spec is None:
        raise DataError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    return spec


def files(dataset: str) -> dict[str, dict[str, Any]]:
    """Registry entries of a dataset, keyed by path relative to the data dir."""
    return _dataset(dataset)["files"]


def sentinel(dataset: str) -> str:
    """One representative file of `dataset`, relative to the data dir (for Snakemake outputs)."""
    return _dataset(dataset)["sentinel"]


def missing_files(dataset: str, data_dir: Path) -> list[str]:
    """Registered files of `dataset` that do not exist under `data_dir` (registry order)."""
    return [rel for rel in files(dataset) if not (Path(data_dir) / rel).is_file()]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_dataset(dataset: str, data_dir: Path) -> dict[str, bool]:
    """sha256 check of the files of `dataset` present under `data_dir` (missing ones left out)."""
    return {
        rel: sha256_file(Path(data_dir) / rel) == entry["sha256"]
        for rel, entry in files(dataset).items()
        if (Path(data_dir) / rel).is_file()
    }


def urllib_fetch(url: str) -> bytes:
    """GET `url`; network failures become a one-line DataError."""
    request = urllib.request.Request(url, headers={"User-Agent": "sparselm-data-download"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.read()
    except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download {url} ({reason}); check the network, or place the file by hand "
            "and point paths.data_dir (SPARSELM_DATA_DIR) at that directory"
        ) from exc


def _place(target: Path, data: bytes, expected: str, origin: str) -> None:
    """Write `data` to `target` only if its sha256 is `expected`, via a temp file + os.replace.

    The temp file lives in the target's directory so the rename is atomic: a reader (or a
    concurrent Snakemake job) never sees a partial or unverified file.
    """
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{target}: sha256 mismatch for {origin}: expected {expected}, got {actual}; "
            "nothing was written, retry or place a good copy there"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# Converters for derived files that are exact functions of one registered original. Each was
# checked to reproduce the shared copy's sha256; `_place` re-checks that on every build.


def _jsonl(data: bytes, name: str) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{name}: not UTF-8 JSON lines ({exc}); delete it to download it again"
        raise DataError(msg) from exc


def _lambada_text(data: bytes, name: str) -> bytes:
    """llm-foundry {context, continuation} -> OpenAI's {"text"} (README: text.rsplit(" ", 1))."""
    rows = _jsonl(data, name)
    lines = [
        json.dumps({"text": r["context"] + " " + r["continuation"]}, ensure_ascii=False)
        for r in rows
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _boolq_fields(data: bytes, name: str) -> bytes:
    """llm-foundry's prompt -> {idx, question, passage, label}, as the boolq README describes."""
    out = []
    for idx, row in enumerate(_jsonl(data, name)):
        query = row["query"]
        if not query.startswith("Passage: ") or "\nQuestion: " not in query:
            raise DataError(f"{name}: line {idx + 1} is not 'Passage: ...\\nQuestion: ...'")
        passage, question = query[len("Passage: ") :].rsplit("\nQuestion: ", 1)
        question = question[:-1] if question.endswith("?") else question
        record = {"idx": idx, "question": question, "passage": passage, "label": row["gold"]}
        out.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(out).encode("utf-8")


def _dart_xml_to_json(data: bytes, name: str) -> bytes:
    """DART test XML -> the dev JSON schema; the XML has no subtree_was_extended, hence null."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"{name}: invalid XML ({exc}); delete it to download it again") from exc
    entries = []
    for entry in root.iter("entry"):
        triples = [m.text.split(" | ") for m in entry.iter("mtriple") if m.text is not None]
        notes = [
            {"source": lex.get("comment"), "text": lex.text or ""} for lex in entry.iter("lex")
        ]
        entries.append({"tripleset": triples, "subtree_was_extended": None, "annotations": notes})
    return json.dumps(entries, indent=2, ensure_ascii=True).encode("utf-8")


_BUILDERS: dict[str, Callable[[bytes, str], bytes]] = {
    "lambada_text": _lambada_text,
    "boolq_fields": _boolq_fields,
    "dart_xml_to_json": _dart_xml_to_json,
}


def _build(rel: str, entry: dict[str, Any], data_dir: Path) -> None:
    (source,) = entry["inputs"]  # every converter reads exactly one original
    source_path = data_dir / source
    try:
        output = _BUILDERS[entry["build"]](source_path.read_bytes(), str(source_path))
    except (KeyError, TypeError, AttributeError) as exc:  # a hand-placed input of another format
        raise DataError(
            f"{source_path}: unexpected record format ({exc!r}) while building {rel}; "
            "delete it to download the pinned original again"
        ) from exc
    _place(data_dir / rel, output, entry["sha256"], f"{entry['build']}({source})")


def _unobtainable(rel: str, entry: dict[str, Any], data_dir: Path) -> DataError:
    sources = " + ".join(entry["sources"])
    return DataError(
        f"{data_dir / rel} is missing; it is derived from {sources} ({entry['how']}); "
        f"see {entry['readme']}; {_HINT}"
    )


def ensure_dataset(dataset: str, data_dir: Path, fetch: Fetcher = urllib_fetch) -> list[Path]:
    """Make every registered file of `dataset` exist under `data_dir`; return their paths.

    Present files are trusted as they are (no hashing, no network), so a complete offline copy
    never triggers a download; use `verify_dataset` to check them. Missing originals are fetched
    and checked, then derived files with a converter are rebuilt; a missing derived file that
    cannot be rebuilt raises a DataError saying where it comes from.
    """
    data_dir = Path(data_dir)
    entries = files(dataset)
    paths = [data_dir / rel for rel in entries]
    missing = missing_files(dataset, data_dir)
    if not missing:
        return paths
    for rel in missing:
        entry = entries[rel]
        if entry["kind"] == "original":
            try:
                data = fetch(entry["url"])
            except DataError as exc:  # name the file the run needs, not only the URL
                raise DataError(f"{data_dir / rel} is missing and {exc}") from None
            _place(data_dir / rel, data, entry["sha256"], entry["url"])
    for rel in missing:
        entry = entries[rel]
        if entry["kind"] == "derived" and "build" in entry:
            _build(rel, entry, data_dir)
    for rel in missing:
        entry = entries[rel]
        if entry["kind"] == "derived" and "build" not in entry:
            raise _unobtainable(rel, entry, data_dir)
    return paths


def _ensure_and_report(dataset: str, data_dir: Path) -> None:
    missing = set(missing_files(dataset, data_dir))
    for path in ensure_dataset(dataset, data_dir):
        rel = path.relative_to(data_dir).as_posix()
        kind = files(dataset)[rel]["kind"]
        action = ("fetched" if kind == "original" else "built") if rel in missing else "present"
        print(f"{action:8s} {path}")


def _verify_and_report(dataset: str, data_dir: Path) -> list[str]:
    """Print ok/BAD/missing per file; return the relative paths that are bad or missing."""
    results = verify_dataset(dataset, data_dir)
    failed = []
    for rel in files(dataset):
        status = "missing" if rel not in results else ("ok" if results[rel] else "BAD")
        print(f"{status:8s} {data_dir / rel}")
        if status != "ok":
            failed.append(rel)
    return failed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sparselm.data.download",
        description="Fetch the pinned files of datasets into a data dir (sha256-checked).",
    )
    parser.add_argument("datasets", nargs="+", metavar="dataset", help=", ".join(DATASETS))
    parser.add_argument("--data-dir", required=True, type=Path, help="the suite's paths.data_dir")
    parser.add_argument(
        "--verify", action="store_true", help="only check sha256 of the files there; no download"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        for dataset in args.datasets:
            _dataset(dataset)  # reject a typo before any download starts
        failed: list[str] = []
        for dataset in args.datasets:
            if args.verify:
                failed += _verify_and_report(dataset, args.data_dir)
            else:
                _ensure_and_report(dataset, args.data_dir)
        if failed:
            raise DataError(
                f"{len(failed)} file(s) under {args.data_dir} are missing or fail their sha256 "
                f"(first: {failed[0]}); delete bad files and run without --verify to fetch them"
            )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data-to-text fine-tuning tasks (E2E, WebNLG 2017, DART) as context -> completion pairs.

Contexts follow microsoft/LoRA's examples/NLG converters:
  * e2e: the LoRA-format MR as is, e.g. "name : Blue Spice | Type : coffee shop".
  * webnlg: triples as "subject : predicate : object" joined by " | ", with DBpedia underscores
    turned into spaces and surrounding double quotes removed.
  * dart: the same, with the predicate lower-cased (as LoRA does).

Prompt format (the one place it is defined): the model reads `format_prompt(context)` =
EOT + context + " ||" and is trained to continue with `format_completion(ref)` = " " + ref,
followed by EOT. The leading EOT mirrors LoRA's BOS token; " ||" mirrors the "||" separator of
the LoRA data files; the space before the reference keeps GPT-2 style word tokens (" The").

Split maps send our split names (train/validation/test) to dataset split names, optionally
sliced by fraction of unique contexts, e.g. "dev[:0.9]". Slicing by context keeps every
reference of one input on the same side, so a held-out slice never leaks into training.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sparselm.errors import DataError
from sparselm.tokenizer import EOT

TASKS = ("e2e", "webnlg", "dart")
SPLITS = ("train", "validation", "test")
SEP = " ||"

TASK_DIRS = {"e2e": "e2e_nlg/lora_format", "webnlg": "webnlg_2017", "dart": "dart"}
# Dataset split name -> file or folder (relative to the task dir).
TASK_FILES = {
    "e2e": {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
    "webnlg": {
        "train": "train",
        "dev": "dev",
        "test": "test/testdata_with_lex.xml",
        "test_unseen": "test/testdata_unseen_with_lex.xml",
    },
    "dart": {"dev": "dart-v1.1.1-full-dev.json", "test": "dart-v1.1.1-full-test.from-xml.json"},
}
DEFAULT_SPLIT_MAPS = {
    "e2e": {"train": "train", "validation": "valid", "test": "test"},
    "webnlg": {"train": "train", "validation": "dev", "test": "test"},
    "dart": {"validation": "dev", "test": "test"},  # DART train is absent offline
}
_SPEC = re.compile(r"^(\w+)(?:\[([0-9.]*):([0-9.]*)\])?$")

Pair = tuple[str, str]


@dataclass(frozen=True)
class TaskExample:
    """One input, the completion to train on (or first reference), and all its references."""

    context: str
    completion: str
    references: tuple[str, ...]


def format_prompt(context: str) -> str:
    """Text the model conditions on; generation starts right after it."""
    return EOT + context + SEP


def format_completion(completion: str) -> str:
    """Target text after the prompt (EOT is appended as a token, not as text)."""
    return " " + completion


def load_task(
    name: str,
    split: str,
    data_dir: Path,
    split_map: Mapping[str, str] | None = None,
) -> list[TaskExample]:
    """Examples of `split`: one per reference for train, one per unique context otherwise."""
    if name not in TASKS:
        raise DataError(f"task.name: unknown task {name!r}; allowed: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise DataError(f"task split {split!r}: expected one of {', '.join(SPLITS)}")
    spec = _resolve_spec(name, split, split_map)
    alias, lo, hi = _parse_spec(name, spec)
    path = Path(data_dir) / TASK_DIRS[name] / TASK_FILES[name][alias]
    if not path.exists():
        raise DataError(
            f"task data not found: {path}; set paths.data_dir (env SPARSELM_DATA_DIR) to the "
            f"folder holding {TASK_DIRS[name].split('/')[0]}/"
        )
    pairs = {"e2e": _read_e2e, "webnlg": _read_webnlg, "dart": _read_dart}[name](path)
    return _build_examples(pairs, lo, hi, per_reference=split == "train")


def _resolve_spec(name: str, split: str, split_map: Mapping[str, str] | None) -> str:
    mapping = DEFAULT_SPLIT_MAPS[name] if split_map is None else split_map
    if split in mapping:
        return str(mapping[split])
    if name == "dart" and split == "train":
        raise DataError(
            "DART train split is absent offline (only dev and test exist); set task.split_map, "
            'e.g. {train: "dev[:0.9]", validation: "dev[0.9:]", test: test}'
        )
    raise DataError(f"task.split_map for {name} has no entry for split {split!r}")


def _parse_spec(name: str, spec: str) -> tuple[str, float, float]:
    match = _SPEC.match(spec.strip())
    allowed = ", ".join(TASK_FILES[name])
    if match is None or match.group(1) not in TASK_FILES[name]:
        raise DataError(
            f"task.split_map value {spec!r} for {name}: expected <split>[<lo>:<hi>] with split "
            f"in {allowed} and fractions lo, hi in [0, 1]"
        )
    try:
        lo = float(match.group(2)) if match.group(2) else 0.0
        hi = float(match.group(3)) if match.group(3) else 1.0
    except ValueError as exc:
        raise DataError(f"task.split_map value {spec!r}: bad fraction") from exc
    if not 0.0 <= lo < hi <= 1.0:
        raise DataError(f"task.split_map value {spec!r}: need 0 <= lo < hi <= 1")
    return match.group(1), lo, hi


def _build_examples(
    pairs: list[Pair], lo: float, hi: float, per_reference: bool
) -> list[TaskExample]:
    groups: dict[str, list[str]] = {}
    for context, ref in pairs:
        groups.setdefault(context, []).append(ref)
    contexts = list(groups)
    kept = contexts[round(lo * len(contexts)) : round(hi * len(contexts))]
    if not per_reference:
        return [TaskExample(c, groups[c][0], tuple(groups[c])) for c in kept]
    keep = set(kept)
    return [TaskExample(c, r, tuple(groups[c])) for c, r in pairs if c in keep]


def _read_e2e(path: Path) -> list[Pair]:
    pairs = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split("||")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DataError(f"{path}:{lineno}: expected one 'context||completion' pair")
            pairs.append((parts[0].strip(), parts[1].strip()))
    return pairs


def _clean_webnlg(part: str) -> str:
    part = part.strip().replace("_", " ")
    if len(part) >= 2 and part[0] == part[-1] == '"':
        part = part[1:-1]
    return part.strip()


def _linearize(triples: list[tuple[str, str, str]]) -> str:
    return " | ".join(f"{s} : {p} : {o}" for s, p, o in triples)


def _read_webnlg(path: Path) -> list[Pair]:
    files = sorted(path.rglob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no WebNLG XML files found")
    pairs = []
    for file in files:
        try:
            root = ET.parse(file).getroot()
        except ET.ParseError as exc:
            raise DataError(f"{file}: invalid XML ({exc})") from exc
        for entry in root.iter("entry"):
            where = f"{file}: entry eid={entry.get('eid')!r}"
            triples = []
            for mtriple in entry.iter("mtriple"):
                parts = (mtriple.text or "").split(" | ")
                if len(parts) != 3:
                    raise DataError(f"{where}: mtriple {mtriple.text!r} is not 's | p | o'")
                triples.append(tuple(_clean_webnlg(p) for p in parts))
            if not triples:
                raise DataError(f"{where}: no <mtriple> in <modifiedtripleset>")
            context = _linearize(triples)
            refs = [" ".join((lex.text or "").split()) for lex in entry.iter("lex")]
            pairs.extend((context, ref) for ref in refs if ref)
    return pairs


def _read_dart(path: Path) -> list[Pair]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from exc
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array of records")
    pairs = []
    for i, record in enumerate(records):
        try:
            triples = [(s, p.lower(), o) for s, p, o in record["tripleset"]]
            refs = [a["text"].strip() for a in record["annotations"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"{path}: record {i}: expected 'tripleset' ([s, p, o] lists) and "
                f"'annotations' ([{{'text': ...}}]) ({exc!r})"
            ) from exc
        if not triples:
            raise DataError(f"{path}: record {i}: empty 'tripleset'")
        pairs.extend((_linearize(triples), ref) for ref in refs if ref)  # skip empty references
    return pairs

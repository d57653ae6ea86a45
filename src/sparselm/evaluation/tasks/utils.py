"""Offline data loaders for the sparselm_* lm-eval tasks (``custom_dataset: !function ...``).

lm-eval calls each loader with the task's metadata as keyword arguments. The data folder is
``data_dir`` from that metadata (``evaluate_checkpoint`` passes it through the TaskManager) or
else the ``SPARSELM_DATA_DIR`` environment variable, so no YAML holds an absolute path.
Records keep the field names of lm-eval's own tasks, so the YAML prompts match theirs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from lm_eval.tasks.wikitext.preprocess_wikitext import process_results as wikitext_results
from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

from sparselm.data.tasks import format_prompt, load_task
from sparselm.errors import DataError

ENV_VAR = "SPARSELM_DATA_DIR"
# Re-exported for `!function utils.<name>` in sparselm_wikitext.yaml: lm-eval's own scoring.
__all__ = ["wikitext_detokenizer", "wikitext_results"]


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    raw = data_dir or os.environ.get(ENV_VAR)
    if not raw:
        raise DataError(f"{ENV_VAR} is not set; point it at the shared data folder")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise DataError(f"data_dir {path} is not a directory (set {ENV_VAR})")
    return path


def _file(data_dir: str | Path | None, relative: str) -> Path:
    path = resolve_data_dir(data_dir) / relative
    if not path.is_file():
        raise DataError(f"{path}: missing; is {ENV_VAR} the shared data folder?")
    return path


def _jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
    return records


def _one_split(split: str, records: list[dict[str, Any]], path: Path) -> DatasetDict:
    if not records:
        raise DataError(f"{path}: no records")
    return DatasetDict({split: Dataset.from_list(records)})


def _fields(path: Path, record: dict[str, Any], keys: tuple[str, ...]) -> list[Any]:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(f"{path}: record lacks field {missing[0]!r}")
    return [record[k] for k in keys]


# ---------------------------------------------------------------- zero-shot tasks
def load_hellaswag(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """Already preprocessed like lm-eval's hellaswag.process_docs (see the data README)."""
    path = _file(data_dir, "hellaswag/hellaswag_val_klosax.jsonl")
    rows = [_fields(path, r, ("ctx", "endings", "label")) for r in _jsonl(path)]
    records = [{"query": q, "choices": c, "label": int(g)} for q, c, g in rows]
    return _one_split("validation", records, path)


def load_lambada_openai(data_dir: str | None = None, **_: Any) -> DatasetDict:
    path = _file(data_dir, "lambada_openai/lambada_test.jsonl")
    records = [{"text": _fields(path, r, ("text",))[0]} for r in _jsonl(path)]
    return _one_split("test", records, path)


def load_piqa(data_dir: str | None = None, **_: Any) -> DatasetDict:
    path = _file(data_dir, "piqa/valid.jsonl")
    labels_path = _file(data_dir, "piqa/valid-labels.lst")
    labels = [int(x) for x in labels_path.read_text().split()]
    docs = _jsonl(path)
    if len(labels) != len(docs):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(docs)} questions")
    records = [
        dict(zip(("goal", "sol1", "sol2"), _fields(path, d, ("goal", "sol1", "sol2")), strict=True))
        | {"label": y}
        for d, y in zip(docs, labels, strict=True)
    ]
    return _one_split("validation", records, path)


def _load_arc(data_dir: str | None, name: str) -> DatasetDict:
    # The test split exists only in llm-foundry's format: "Question: " + stem, choices, gold.
    path = _file(data_dir, f"arc/llmfoundry_arc_{name}.jsonl")
    records = []
    for r in _jsonl(path):
        query, choices, gold = _fields(path, r, ("query", "choices", "gold"))
        records.append(
            {"question": query.removeprefix("Question: "), "choices": choices, "label": int(gold)}
        )
    return _one_split("test", records, path)


def load_arc_easy(data_dir: str | None = None, **_: Any) -> DatasetDict:
    return _load_arc(data_dir, "easy")


def load_arc_challenge(data_dir: str | None = None, **_: Any) -> DatasetDict:
    return _load_arc(data_dir, "challenge")


def load_openbookqa(data_dir: str | None = None, **_: Any) -> DatasetDict:
    path = _file(data_dir, "openbookqa/Main/test.jsonl")
    records = []
    for r in _jsonl(path):
        question, key = _fields(path, r, ("question", "answerKey"))
        labels = [c["label"] for c in question["choices"]]
        if key.strip() not in labels:
            raise DataError(f"{path}: id {r.get('id')!r}: answerKey {key!r} not among {labels}")
        records.append(
            {
                "question_stem": question["stem"],
                "choices": [c["text"] for c in question["choices"]],
                "label": labels.index(key.strip()),
            }
        )
    return _one_split("test", records, path)


def load_boolq(data_dir: str | None = None, **_: Any) -> DatasetDict:
    path = _file(data_dir, "boolq/boolq_dev.jsonl")
    keys = ("passage", "question", "label")
    records = [dict(zip(keys, _fields(path, r, keys), strict=True)) for r in _jsonl(path)]
    return _one_split("validation", records, path)


def load_winogrande(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """llm-foundry's partial-context form: the decomposition lm-eval's winogrande scores."""
    path = _file(data_dir, "winogrande/llmfoundry_winogrande.jsonl")
    keys = ("context_options", "continuation", "gold")
    records = [dict(zip(keys, _fields(path, r, keys), strict=True)) for r in _jsonl(path)]
    return _one_split("validation", records, path)


def load_wikitext(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """WikiText-2 raw test as lm-eval's document-level pages (one per top-level heading).

    The raw copy lost its blank lines (and uses CRLF); its lines align one-to-one with the
    non-blank lines of the exact tokenized test file, whose blank lines are put back.
    """
    raw_path = _file(data_dir, "wikitext-2/raw/wiki.test.raw")
    tok_path = _file(data_dir, "wikitext-2/tokens/wiki.test.tokens")
    raw = [x for x in raw_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    layout = tok_path.read_text(encoding="utf-8").split("\n")
    if sum(1 for x in layout if x.strip()) != len(raw):
        raise DataError(f"{raw_path}: {len(raw)} lines do not align with {tok_path}")
    lines, it = [], iter(raw)
    for line in layout:
        lines.append(next(it) if line.strip() else line)
    pages = [{"page": page} for page in _pages(lines)]
    return _one_split("test", pages, raw_path)


def _pages(lines: list[str]) -> list[str]:
    """Split at top-level " = Title = " headings, as EleutherAI/wikitext_document_level does."""
    pages: list[str] = []
    current: list[str] = []
    for line in lines:
        bare = line.replace("= = =", "===").replace("= =", "==").strip()
        if bare.startswith("= ") and bare.endswith(" ="):
            if "\n".join(current).strip():
                pages.append("\n".join(current))
            current = []
        current.append(line)
    if "\n".join(current).strip():
        pages.append("\n".join(current))
    return pages


# ---------------------------------------------------------------- data-to-text (NLG) tasks
def _load_nlg(data_dir: str | None, name: str) -> DatasetDict:
    examples = load_task(name, "test", resolve_data_dir(data_dir))
    records = [
        {"context": e.context, "prompt": format_prompt(e.context), "references": list(e.references)}
        for e in examples
    ]
    return _one_split("test", records, resolve_data_dir(data_dir) / name)


def load_e2e_nlg(data_dir: str | None = None, **_: Any) -> DatasetDict:
    return _load_nlg(data_dir, "e2e")


def load_webnlg(data_dir: str | None = None, **_: Any) -> DatasetDict:
    return _load_nlg(data_dir, "webnlg")


def load_dart(data_dir: str | None = None, **_: Any) -> DatasetDict:
    return _load_nlg(data_dir, "dart")

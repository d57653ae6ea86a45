"""Local corpora yield text, splits are deterministic, and bad input names what is wrong."""

import json
import os
import random
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from sparselm.data.corpus import SOURCES, SPLITS, iter_documents, nltk_split_of
from sparselm.errors import DataError


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_local_sources_yield_text(source, split, data_dir):
    if source == "wikitext-2" and split == "train":
        pytest.skip("wikitext-2 is eval only")
    docs = list(islice(iter_documents(source, split, data_dir), 3))
    assert docs and all(isinstance(d, str) and d.strip() for d in docs)


def test_wikitext_train_is_refused(data_dir):
    with pytest.raises(DataError, match="wikitext-2 has no train split"):
        iter_documents("wikitext-2", "train", data_dir)


def test_unknown_source_lists_allowed(data_dir):
    with pytest.raises(DataError, match="unknown source 'bogus'.*pg_books.*tiny_shakespeare"):
        iter_documents("bogus", "train", data_dir)


@pytest.mark.parametrize("source", SOURCES)
def test_missing_file_names_path_and_setting(source, tmp_path):
    with pytest.raises(DataError) as info:
        iter_documents(source, "validation", tmp_path)  # raised eagerly, before iteration
    msg = str(info.value)
    assert str(tmp_path) in msg and "paths.data_dir" in msg and "SPARSELM_DATA_DIR" in msg


def test_shakespeare_splits_partition_the_file(data_dir):
    parts = [
        next(iter_documents("tiny_shakespeare", s, data_dir))
        for s in ("train", "validation", "test")
    ]
    full = (data_dir / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")
    assert "".join(parts) == full
    assert parts[0].endswith("\n") and parts[1].endswith("\n")
    assert 0.89 < len(parts[0]) / len(full) < 0.91


def test_nltk_split_is_hash_based_and_disjoint(data_dir):
    assert nltk_split_of("state_union/1945-Truman.txt") == nltk_split_of(
        "state_union/1945-Truman.txt"
    )
    counts = {
        s: sum(1 for _ in iter_documents("nltk_english_text", s, data_dir))
        for s in ("train", "validation", "test")
    }
    assert sum(counts.values()) == 2132  # README: 2,132 documents
    assert counts["validation"] > 0 and counts["test"] > 0
    assert counts["train"] > 0.95 * 2132


def test_malformed_jsonl_names_file_and_line(tmp_path):
    folder = tmp_path / "pg_books"
    folder.mkdir()
    (folder / "validation.jsonl").write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(DataError, match=r"validation\.jsonl:2"):
        list(iter_documents("pg_books", "validation", tmp_path))


# ---------------------------------------------------------------- local text (data.source=path)


def _words(n_lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = ["the", "a", "model", "sparse", "layer", "token", "train", "of", "and", "runs"]
    return "".join(" ".join(rng.choices(vocab, k=8)) + "\n" for _ in range(n_lines))


def _splits(source, field: str = "text") -> list[list[str]]:
    return [list(iter_documents(str(source), s, Path("unused"), field)) for s in SPLITS]


def test_a_local_txt_file_is_cut_90_5_5_at_line_ends(tmp_path):
    text = _words(400)
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    parts = [docs[0] for docs in _splits(path)]
    assert all(len(docs) == 1 for docs in _splits(path))
    assert "".join(parts) == text  # the splits partition the file
    assert parts[0].endswith("\n") and parts[1].endswith("\n")
    assert 0.89 < len(parts[0]) / len(text) < 0.91 and 0.04 < len(parts[1]) / len(text) < 0.06


def test_a_jsonl_file_yields_its_records_and_the_text_field_is_a_setting(tmp_path):
    records = [{"id": i, "body": f"record {i}\nsecond line {i}\n"} for i in range(40)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")  # blank line skipped
    train, val, test = _splits(path, field="body")
    assert train[0] == records[0]["body"] and len(train) >= 35
    assert "".join(train + val + test) == "".join(r["body"] for r in records)
    assert val and test
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: .*'text' field"):
        _splits(path)  # the default field is absent: file and line named


def test_a_folder_is_read_in_sorted_order_and_relative_paths_work(tmp_path, monkeypatch):
    root = tmp_path / "texts"
    (root / "a").mkdir(parents=True)
    (root / "b.txt").write_text("B\n" * 50)
    (root / "a.txt").write_text("A\n" * 50)
    (root / "a" / "c.jsonl").write_text(json.dumps({"text": "C\n" * 50}) + "\n")
    (root / "notes.md").write_text("not a corpus file\n")
    (root / ".hidden.txt").write_text("H\n")
    monkeypatch.chdir(tmp_path)
    docs = [d for split in _splits("texts") for d in split]
    assert "".join(docs) == "A\n" * 50 + "C\n" * 50 + "B\n" * 50  # a.txt < a/c.jsonl < b.txt


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: p / "missing.txt", r"data\.source=.*missing\.txt: no such file or folder"),
        (lambda p: _write(p / "empty.txt", "\n\n"), r"empty\.txt: empty file"),
        (lambda p: _write(p / "bad.jsonl", '{"text": "a"}\n{"title": "b"}\n'), r"bad\.jsonl:2: "),
        (lambda p: _write(p / "bad.jsonl", '{"text": "a"}\n{oops\n'), r"bad\.jsonl:2: invalid"),
        (lambda p: _write(p / "d" / "x.csv", "a,b\n").parent, r"holds no \.txt or \.jsonl"),
        (lambda p: _write(p / "x.csv", "a,b\n"), r"a \.txt or \.jsonl file"),
        (lambda p: _write(p / "one.txt", "a single line"), r"no text for the validation split"),
    ],
)
def test_bad_local_corpora_are_one_line_errors_naming_the_file(tmp_path, make, needle):
    source = make(tmp_path)
    with pytest.raises(DataError, match=needle) as err:
        for split in ("train", "validation"):
            list(iter_documents(str(source), split, tmp_path))
    assert "\n" not in str(err.value)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_prepared_names_follow_the_content_of_a_local_corpus(tmp_path):
    from omegaconf import OmegaConf

    from sparselm.cli.prepare import shards_dir, tokenizer_file
    from sparselm.tokenizer import train_bpe

    path = tmp_path / "corpus.txt"
    path.write_text(_words(50))
    cfg = OmegaConf.create(
        {
            "data": {"source": str(path), "max_train_tokens": None},
            "paths": {"prepared_dir": str(tmp_path / "prepared")},
            "tokenizer": {"vocab_size": 300, "max_train_chars": 1000},
        }
    )
    tok = train_bpe([_words(20)], vocab_size=300)
    names = (tokenizer_file(cfg), shards_dir(cfg, tok))
    assert all("local-corpus_txt-" in str(p) and p.is_relative_to(tmp_path) for p in names)
    os.utime(path, (1, 1))  # only the time changes: the same names (a content hash)
    assert (tokenizer_file(cfg), shards_dir(cfg, tok)) == names
    path.write_text(_words(50, seed=1))  # the same size, other words
    changed = (tokenizer_file(cfg), shards_dir(cfg, tok))
    assert changed[0] != names[0] and changed[1] != names[1]
    cfg.data.text_field = "body"  # another JSONL key is another corpus
    assert tokenizer_file(cfg) != changed[0]


@pytest.mark.slow
def test_pretrain_cli_on_a_local_text_file(data_dir, tmp_path):
    corpus = tmp_path / "my corpus.txt"
    corpus.write_text(_words(3000))
    out = tmp_path / "run"
    env = os.environ | {
        "SPARSELM_DATA_DIR": str(data_dir),
        "SPARSELM_PREPARED_DIR": str(tmp_path / "prepared"),
    }
    args = ["scale=smoke", f"data.source={corpus}", "train.steps=2", "logger=none"]
    proc = subprocess.run(
        [sys.executable, "-m", "sparselm.cli.pretrain", *args, f"hydra.run.dir={out}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["data"] == str(corpus.resolve())
    assert metrics["final_val_loss"] is not None
    (tok_dir,) = (tmp_path / "prepared" / "tokenizers").iterdir()
    assert tok_dir.name.startswith("bpe-local-my corpus_txt-")
    # stderr is a pipe, not a terminal: progress comes as plain lines (train.progress=auto)
    assert "train step 2/2 (100%) | loss" in proc.stderr

"""Shard files round-trip, the manifest describes them, and preparation is idempotent."""

import json

import numpy as np
import pytest

from sparselm.data.corpus import iter_documents
from sparselm.data.shards import (
    open_split,
    prepare_corpus,
    read_manifest,
    token_dtype,
    write_manifest,
    write_split,
)
from sparselm.errors import DataError
from sparselm.tokenizer import eot_id, tokenizer_hash, train_bpe


@pytest.fixture(scope="module")
def tok(data_dir):
    text = next(iter_documents("tiny_shakespeare", "train", data_dir))
    return train_bpe(text.splitlines(), vocab_size=512)


def test_write_read_roundtrip(tok, tmp_path):
    docs = ["Hello there, world.", "Second doc\nwith lines.", "x"]
    info = write_split(docs, tok, tmp_path, "train", None)
    expected = []
    for d in docs:
        expected += tok.encode(d).ids + [eot_id(tok)]
    assert info == {"file": "train.bin", "tokens": len(expected), "dtype": "uint16", "documents": 3}
    write_manifest(tmp_path, {"train": info}, tok, "unit", {"note": 1})
    arr = open_split(tmp_path, "train")
    assert arr.dtype == np.uint16 and not arr.flags.writeable
    assert arr.tolist() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "train.bin"]


def test_max_tokens_truncates(tok, tmp_path):
    info = write_split(["one two three four five"] * 10, tok, tmp_path, "validation", 7)
    assert info["tokens"] == 7
    assert (tmp_path / "validation.bin").stat().st_size == 14


def test_dtype_by_vocab():
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint32


def test_manifest_fields_and_idempotence(tok, data_dir, tmp_path):
    out = tmp_path / "prepared"
    m = prepare_corpus("tiny_shakespeare", data_dir, out, tok, 20_000, 5_000)
    assert m["source"] == "tiny_shakespeare"
    assert m["tokenizer_hash"] == tokenizer_hash(tok)
    assert m["vocab_size"] == 512 and m["eot_id"] == 0
    assert m["splits"]["train"]["tokens"] == 20_000
    assert m["splits"]["validation"]["tokens"] == 5_000
    assert m["splits"]["train"]["dtype"] == "uint16"
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert prepare_corpus("tiny_shakespeare", data_dir, out, tok, 20_000, 5_000) == m
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing rewritten
    m2 = prepare_corpus("tiny_shakespeare", data_dir, out, tok, 10_000, 5_000)
    assert m2["splits"]["train"]["tokens"] == 10_000  # changed limit -> redone
    assert len(open_split(out, "train")) == 10_000


def test_size_mismatch_names_file(tok, tmp_path):
    info = write_split(["some text here"], tok, tmp_path, "train", None)
    write_manifest(tmp_path, {"train": info}, tok, "unit", {})
    with open(tmp_path / "train.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(DataError, match="train.bin"):
        open_split(tmp_path, "train")
    (tmp_path / "train.bin").unlink()
    with pytest.raises(DataError, match="train.bin"):
        open_split(tmp_path, "train")
    with pytest.raises(DataError, match="no split 'validation'"):
        open_split(tmp_path, "validation")


def test_missing_or_bad_manifest(tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="manifest.json"):
        read_manifest(tmp_path)

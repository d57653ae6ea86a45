"""Local corpora yield text, splits are deterministic, and bad input names what is wrong."""

from itertools import islice

import pytest

from sparselm.data.corpus import SOURCES, iter_documents, nltk_split_of
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

"""Tokenizer training is deterministic and survives save/load byte for byte."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparselm.data.corpus import iter_documents
from sparselm.errors import DataError
from sparselm.tokenizer import (
    EOT,
    eot_id,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
    train_bpe,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lines(data_dir: Path) -> list[str]:
    return next(iter_documents("tiny_shakespeare", "train", data_dir)).splitlines()


@pytest.fixture(scope="module")
def tok(lines):
    return train_bpe(lines, vocab_size=512)


def test_training_is_deterministic(lines, tok):
    again = train_bpe(lines, vocab_size=512)
    assert again.to_str() == tok.to_str()
    assert tokenizer_hash(again) == tokenizer_hash(tok)


def test_vocab_and_eot(tok):
    assert tok.get_vocab_size() == 512
    assert eot_id(tok) == 0
    assert tok.token_to_id(EOT) == 0


def test_roundtrip_any_bytes(tok):
    text = "First Citizen:\n  café £ 30 🙂\tend"
    assert tok.decode(tok.encode(text).ids) == text
    ids = tok.encode("a" + EOT + "b").ids
    assert eot_id(tok) in ids  # EOT in text maps to the special token, not its bytes


def test_save_load_equal(tok, tmp_path):
    path = tmp_path / "tok" / "tokenizer.json"
    save_tokenizer(tok, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no tmp left
    for spec in (path, str(path), path.parent):
        loaded = load_tokenizer(spec)
        assert loaded.to_str() == tok.to_str()
        assert tokenizer_hash(loaded) == tokenizer_hash(tok)


def test_hash_is_sha256_hex(tok):
    digest = tokenizer_hash(tok)
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match="nope.json"):
        load_tokenizer(missing)


def test_tiny_vocab_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], vocab_size=100)


def test_hub_name_offline_names_spec():
    # Subprocess: HF_HUB_OFFLINE is read at import, and offline mode fails fast without retries.
    code = (
        "from sparselm.tokenizer import load_tokenizer\n"
        "try:\n    load_tokenizer('no-such-org/no-such-tokenizer')\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.startswith("DataError")
    assert "no-such-org/no-such-tokenizer" in out.stdout

"""Pinned dataset download: registry vs the offline copy, no network when complete, atomic
checked placement, and one-line errors. Every fetch here is a fake serving the local copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparselm.data import download
from sparselm.data.download import DATASETS, ensure_dataset, missing_files, verify_dataset
from sparselm.errors import DataError

COMMIT_URL = r"^https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+$"


def no_fetch(url: str) -> bytes:
    raise AssertionError(f"fetch called for {url} although the files are present")


class LocalFetcher:
    """Serves each registered original's bytes from the offline copy and records the URLs."""

    def __init__(self, data_dir: Path, corrupt: bool = False) -> None:
        self.by_url = {
            entry["url"]: data_dir / rel
            for dataset in DATASETS
            for rel, entry in download.files(dataset).items()
            if entry["kind"] == "original"
        }
        self.corrupt = corrupt
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        data = self.by_url[url].read_bytes()
        return data + b"\n" if self.corrupt else data


def copy_files(src: Path, dst: Path, rels: list[str]) -> None:
    for rel in rels:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def shared_hashes(data_dir: Path) -> dict[str, dict[str, bool]]:
    """sha256 check of the whole offline copy (~170 MB), done once per session."""
    return {dataset: verify_dataset(dataset, data_dir) for dataset in DATASETS}


def test_registry_entries_are_well_formed() -> None:
    assert set(DATASETS) == {
        "e2e_nlg", "webnlg_2017", "dart", "hellaswag", "lambada_openai", "piqa", "arc",
        "openbookqa", "boolq", "winogrande", "wikitext-2", "tiny_shakespeare",
        "nltk_english_text", "pg_books",
    }  # fmt: skip
    for dataset in DATASETS:
        entries = download.files(dataset)
        assert download.sentinel(dataset) in entries
        for rel, entry in entries.items():
            assert rel.startswith(f"{dataset}/")
            assert len(entry["sha256"]) == 64 and entry["size"] > 0
            if entry["kind"] == "original":
                assert re.match(COMMIT_URL, entry["url"]), rel
            else:
                assert entry["kind"] == "derived" and entry["sources"] and entry["how"], rel
                assert entry["readme"].startswith(f"shared/data/{dataset}/README.md"), rel
                assert "url" not in entry  # a derived file must not look downloadable
                assert "\n" not in " ".join([*entry["sources"], entry["how"], entry["readme"]])
                if "build" in entry:
                    assert entry["build"] in download._BUILDERS
                    assert all(entries[i]["kind"] == "original" for i in entry["inputs"])


def test_every_registered_file_matches_the_offline_copy(data_dir, shared_hashes) -> None:
    for dataset in DATASETS:
        assert missing_files(dataset, data_dir) == []
        assert set(shared_hashes[dataset]) == set(download.files(dataset))
        bad = [rel for rel, ok in shared_hashes[dataset].items() if not ok]
        assert bad == [], f"sha256 mismatch in {dataset}: {bad}"
        for rel, entry in download.files(dataset).items():
            assert (data_dir / rel).stat().st_size == entry["size"], rel


def test_no_fetch_when_all_files_are_present(data_dir) -> None:
    for dataset in DATASETS:
        paths = ensure_dataset(dataset, data_dir, fetch=no_fetch)
        assert [p.relative_to(data_dir).as_posix() for p in paths] == list(download.files(dataset))


def test_missing_original_is_fetched_verified_and_placed(data_dir, tmp_path) -> None:
    rels = list(download.files("piqa"))
    copy_files(data_dir, tmp_path, [r for r in rels if r != "piqa/valid.jsonl"])
    assert missing_files("piqa", tmp_path) == ["piqa/valid.jsonl"]
    fetch = LocalFetcher(data_dir)
    ensure_dataset("piqa", tmp_path, fetch=fetch)
    assert fetch.calls == [download.files("piqa")["piqa/valid.jsonl"]["url"]]
    assert (tmp_path / "piqa/valid.jsonl").read_bytes() == (
        data_dir / "piqa/valid.jsonl"
    ).read_bytes()
    assert all_files(tmp_path) == set(rels)  # no temp file left behind
    assert all(verify_dataset("piqa", tmp_path).values())


@pytest.mark.parametrize(
    "dataset",
    [d for d in DATASETS if all("url" in e or "build" in e for e in download.files(d).values())],
)
def test_fetchable_dataset_from_empty_dir(data_dir, tmp_path, dataset) -> None:
    """Originals download and the exact converters rebuild derived files (lambada, boolq, dart)."""
    fetch = LocalFetcher(data_dir)
    ensure_dataset(dataset, tmp_path / "data", fetch=fetch)
    entries = download.files(dataset)
    assert len(fetch.calls) == sum(e["kind"] == "original" for e in entries.values())
    assert all_files(tmp_path / "data") == set(entries)
    assert all(verify_dataset(dataset, tmp_path / "data").values())


def test_corrupt_download_raises_and_leaves_nothing(data_dir, tmp_path) -> None:
    entry = download.files("tiny_shakespeare")["tiny_shakespeare/input.txt"]
    with pytest.raises(DataError) as info:
        ensure_dataset("tiny_shakespeare", tmp_path, fetch=LocalFetcher(data_dir, corrupt=True))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "tiny_shakespeare/input.txt") in message
    assert entry["sha256"] in message and "got " in message
    assert all_files(tmp_path) == set()


def test_missing_derived_file_explains_where_it_comes_from(data_dir, tmp_path) -> None:
    rels = [r for r, e in download.files("e2e_nlg").items() if e["kind"] == "original"]
    copy_files(data_dir, tmp_path, rels)
    with pytest.raises(DataError) as info:
        ensure_dataset("e2e_nlg", tmp_path, fetch=no_fetch)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}/e2e_nlg/lora_format/train.txt is missing; it is derived")
    assert "harvardnlp/neural-template-gen/dff72ca246e80fd0eef2ca0b8b1fbf21fe927df4" in message
    assert "e2e_nlg/README.md" in message and "SPARSELM_DATA_DIR" in message


def test_missing_derived_file_does_not_block_fetching_originals(data_dir, tmp_path) -> None:
    fetch = LocalFetcher(data_dir)
    with pytest.raises(DataError, match="is derived from"):
        ensure_dataset("e2e_nlg", tmp_path, fetch=fetch)
    assert missing_files("e2e_nlg", tmp_path) == ["e2e_nlg/lora_format/train.txt"]


def test_unknown_dataset_is_a_one_line_cli_error(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sparselm.data.download", "nope", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown dataset 'nope'")
    assert all(name in lines[0] for name in DATASETS)
    assert proc.stdout == "" and all_files(tmp_path) == set()


def test_cli_verify_and_present(data_dir, capsys) -> None:
    assert download.main(["winogrande", "piqa", "--data-dir", str(data_dir), "--verify"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("ok ") for line in out)
    assert download.main(["piqa", "--data-dir", str(data_dir)]) == 0
    assert all(line.startswith("present") for line in capsys.readouterr().out.splitlines())


def test_cli_verify_reports_missing(tmp_path, capsys) -> None:
    assert download.main(["winogrande", "--data-dir", str(tmp_path), "--verify"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("missing ")
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: 1 file(s)")


def test_preparing_a_corpus_fetches_its_missing_files_first(data_dir, tmp_path, monkeypatch):
    """The tokenizer job (no Snakemake rule owns the data directory) fetches a registered
    dataset's missing files before reading them, and leaves present files alone."""
    from sparselm.cli import prepare
    from sparselm.cli.common import compose_config

    fetch = LocalFetcher(data_dir)
    monkeypatch.setattr(
        prepare, "ensure_dataset", lambda name, root: ensure_dataset(name, root, fetch)
    )
    cfg, _ = compose_config(
        "prepare",
        [
            "scale=smoke",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.prepared_dir={tmp_path / 'prep'}",
            "tokenizer.vocab_size=300",
            "tokenizer.max_train_chars=20000",
        ],
    )
    assert cfg.data.source == "tiny_shakespeare"
    prepare.ensure_tokenizer(cfg)
    assert fetch.calls == [download.files("tiny_shakespeare")["tiny_shakespeare/input.txt"]["url"]]
    assert missing_files("tiny_shakespeare", tmp_path / "data") == []
    prepare.ensure_shards(cfg, prepare.ensure_tokenizer(cfg)[0])  # present now: no second fetch
    assert len(fetch.calls) == 1

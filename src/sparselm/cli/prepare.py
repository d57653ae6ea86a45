"""Train (or load) the tokenizer and tokenize the pretraining corpus into shards.

``python -m sparselm.cli.prepare scale=tiny`` does this ahead of pretraining; the pretraining
entry point calls the same functions, so a fresh clone can pretrain directly. A registered
dataset's missing files are fetched first (``sparselm.data.download``). Outputs land in
``paths.prepared_dir`` under names derived from their inputs, never from the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig
from tokenizers import Tokenizer

from sparselm.cli.common import compose_config, run_cli, write_json_atomic
from sparselm.data.corpus import is_local, iter_documents
from sparselm.data.download import DATASETS, ensure_dataset
from sparselm.data.local_text import cache_tag
from sparselm.data.shards import MANIFEST, prepare_corpus
from sparselm.errors import ConfigError
from sparselm.tokenizer import load_tokenizer, save_tokenizer, tokenizer_hash, train_bpe


def text_field(cfg: DictConfig) -> str:
    """The documents' key in a local JSONL corpus (``data.text_field``, default ``text``)."""
    return str(cfg.data.get("text_field") or "text")


def source_tag(cfg: DictConfig) -> str:
    """``data.source`` in prepared file names; a local corpus: its name and content hash, so
    an edited file gets a new tokenizer and new shards."""
    if is_local(cfg.data.source):
        return cache_tag(cfg.data.source, text_field(cfg))
    return cfg.data.source


def tokenizer_file(cfg: DictConfig) -> Path:
    if cfg.tokenizer.get("path"):
        return Path(cfg.tokenizer.path)
    tag = f"bpe-{source_tag(cfg)}-v{cfg.tokenizer.vocab_size}-c{cfg.tokenizer.max_train_chars}"
    return Path(cfg.paths.prepared_dir) / "tokenizers" / tag / "tokenizer.json"


def ensure_raw_data(cfg: DictConfig) -> None:
    """Fetch what is missing of a registered dataset (pinned, checksummed, placed atomically so
    concurrent jobs are safe); present files are trusted as they are and never rewritten."""
    if cfg.data.source in DATASETS:
        ensure_dataset(cfg.data.source, Path(cfg.paths.data_dir))


def ensure_tokenizer(cfg: DictConfig) -> tuple[Tokenizer, Path | None]:
    """The run's tokenizer: a named pretrained one, a saved file, or a BPE trained now."""
    kind = cfg.tokenizer.kind
    if kind == "pretrained":
        return load_tokenizer(cfg.tokenizer.name), None
    if kind != "bpe":
        raise ConfigError(f"tokenizer.kind={kind!r} is unknown; allowed: bpe, pretrained")
    path = tokenizer_file(cfg)
    if path.is_file():
        return load_tokenizer(path), path
    ensure_raw_data(cfg)
    docs = iter_documents(
        cfg.data.source, cfg.data.train_split, Path(cfg.paths.data_dir), text_field(cfg)
    )
    tok = train_bpe(
        _capped(docs, int(cfg.tokenizer.max_train_chars)),
        int(cfg.tokenizer.vocab_size),
        int(cfg.tokenizer.min_frequency),
    )
    save_tokenizer(tok, path)
    return tok, path


def _capped(docs, max_chars: int):
    """The first ``max_chars`` characters of the stream (BPE needs a sample, not the corpus)."""
    seen = 0
    for doc in docs:
        if seen >= max_chars:
            return
        yield doc[: max_chars - seen]
        seen += len(doc)


def shards_dir(cfg: DictConfig, tok: Tokenizer) -> Path:
    if cfg.data.get("shards_dir"):
        return Path(cfg.data.shards_dir)
    limit = cfg.data.max_train_tokens if cfg.data.max_train_tokens is not None else "all"
    name = source_tag(cfg).replace(":", "_").replace("/", "_")
    tag = f"{name}-{tokenizer_hash(tok)[:12]}-{limit}"
    return Path(cfg.paths.prepared_dir) / "shards" / tag


def ensure_shards(cfg: DictConfig, tok: Tokenizer) -> Path:
    out = shards_dir(cfg, tok)
    if not (out / MANIFEST).is_file():
        ensure_raw_data(cfg)
    splits = (cfg.data.train_split, cfg.data.val_split)
    source = cfg.data.source
    if is_local(source):  # the manifest names the file, however the command spelled it
        source = str(Path(source).expanduser().resolve())
    prepare_corpus(
        source,
        Path(cfg.paths.data_dir),
        out,
        tok,
        cfg.data.max_train_tokens,
        cfg.data.max_val_tokens,
        splits=splits,
        text_field=text_field(cfg),
    )
    return out


def main(argv: Sequence[str]) -> int:
    cfg, run_dir = compose_config("prepare", argv)
    if cfg.what not in ("tokenizer", "shards", "all"):
        raise ConfigError(f"what={cfg.what!r} is unknown; allowed: tokenizer, shards, all")
    tok, tok_path = ensure_tokenizer(cfg)
    summary = {
        "tokenizer": str(tok_path) if tok_path else cfg.tokenizer.name,
        "tokenizer_hash": tokenizer_hash(tok),
        "vocab_size": tok.get_vocab_size(),
    }
    if cfg.what != "tokenizer":
        summary["shards_dir"] = str(ensure_shards(cfg, tok))
    write_json_atomic(run_dir / "prepared.json", summary)
    return 0


if __name__ == "__main__":
    run_cli(main, "prepare")

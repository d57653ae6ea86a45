"""Small shared builders for tests: a toy GPT, a deterministic batch source and a W&B run
recorded from a job's files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from sparselm.model import GPT, GPTConfig


def toy_config(**overrides) -> GPTConfig:
    base = dict(vocab_size=64, n_layer=2, n_head=2, d_model=32, d_ff=64, block_size=16)
    return GPTConfig(**(base | overrides))


def toy_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(toy_config(**overrides))


class RandomTokens:
    """Batches that are a pure function of (step, micro): the protocol the loop relies on."""

    def __init__(self, vocab: int = 64, batch: int = 4, seq: int = 16, seed: int = 0) -> None:
        self.vocab, self.batch, self.seq, self.seed = vocab, batch, seq, seed

    def train_batch(self, step: int, micro: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + micro)
        t = torch.randint(0, self.vocab, (self.batch, self.seq + 1), generator=g)
        return t[:, :-1], t[:, 1:]

    def val_batches(self, n_batches: int):
        g = torch.Generator().manual_seed(999)
        out = []
        for _ in range(n_batches):
            t = torch.randint(0, self.vocab, (self.batch, self.seq + 1), generator=g)
            out.append((t[:, :-1], t[:, 1:]))
        return out


def save_tiny_run(run_dir, texts: list[str], block_size: int, seed: int = 0):
    """A run folder with a random 2-layer GPT and a BPE trained on ``texts``, as training
    leaves it (checkpoint + tokenizer.json), for tests of what reads trained models."""
    from sparselm.checkpoint import TrainingState, save_checkpoint
    from sparselm.tokenizer import save_tokenizer, train_bpe

    tok = train_bpe(texts, vocab_size=300)
    torch.manual_seed(seed)
    model = GPT(toy_config(vocab_size=tok.get_vocab_size(), block_size=block_size))
    save_checkpoint(run_dir, TrainingState(step=1), model, None, {}, "")
    save_tokenizer(tok, run_dir / "tokenizer.json")
    (run_dir / "metrics.json").write_text('{"steps": 1}\n')  # marks the run finished
    return run_dir


class RecordedRun:
    """A W&B run as the public API returns it, recorded from a job's own files: named and
    identified as the job's logger config names it, its config the resolved config.yaml plus
    the ``run_dir`` the tracker logs beside it; the tracker logs each train_log.jsonl record
    (nested keys flattened, nulls left out) at its step, and W&B keeps one history row per step
    (records logged at one step merge); the summary holds the last logged values and
    metrics.json. A hand-made folder without a logger config is named as the pipeline names a
    variant study's job, ``<stage>-<variant>-seed<N>``."""

    def __init__(self, folder: Path, stage: str = "pretrain") -> None:
        from sparselm.tracking import flatten

        config = yaml.safe_load((folder / "config.yaml").read_text())
        logger = config.get("logger") or {}
        variant, _, seed = folder.name.rpartition("_seed")
        self.name = logger.get("name") or f"{stage.replace('_', '-')}-{variant}-seed{seed}"
        self.id = logger.get("run_id") or f"{stage}-{folder.name}"
        self.path, self.job_type = ["e", "sparselm", self.id], stage
        self.config = config | {"run_dir": str(folder)}
        log = folder / "train_log.jsonl"
        rows: dict[int, dict] = {}
        for line in log.read_text().splitlines() if log.is_file() else []:
            record = {k: v for k, v in flatten(json.loads(line)).items() if v is not None}
            rows.setdefault(record["step"], {"_step": record["step"]}).update(record)
        self._history = list(rows.values())
        self.summary_metrics = {k: v for row in self._history for k, v in row.items()}
        self.summary_metrics |= flatten(json.loads((folder / "metrics.json").read_text()))

    def scan_history(self):
        return iter(self._history)


def recorded_runs(study_dir: Path) -> list[RecordedRun]:
    """Every job of a study's results folder (a folder holding a metrics.json) as its W&B run."""
    return [
        RecordedRun(path.parent, path.relative_to(study_dir).parts[0])
        for path in sorted(study_dir.rglob("metrics.json"))
        if path.parent.parent.name != "checkpoints"
    ]

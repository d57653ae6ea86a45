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
        from sparselm.tracking import as_logged, flatten

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
            record = as_logged(json.loads(line))
            rows.setdefault(record["step"], {"_step": record["step"]}).update(record)
        self._history = list(rows.values())
        self.summary_metrics = {k: v for row in self._history for k, v in row.items()}
        self.summary_metrics |= flatten(json.loads((folder / "metrics.json").read_text()))

    def scan_history(self):
        return iter(self._history)


def finished_jobs(study_dir: Path) -> list[Path]:
    """Every finished job folder of a study's results folder, as the analysis finds them."""
    from analysis.run_store import STAGE_DEPTH, FileRuns

    store = FileRuns(study_dir)
    return sorted(study_dir / key for stage in STAGE_DEPTH for key in store.keys(stage))


def recorded_runs(study_dir: Path) -> list[RecordedRun]:
    """Every job of a study's results folder as its W&B run."""
    jobs = finished_jobs(study_dir)
    return [RecordedRun(job, job.relative_to(study_dir).parts[0]) for job in jobs]


class OfflineRun:
    """A W&B run as the public API would return it, read from what the job's tracker really
    wrote offline (``<job>/wandb/offline-run-*/run-*.wandb``, a resumed job's files in order):
    its name, id, config, final summary and per-step history. wandb ships no reader for these
    files, so this reads their framing itself: 32 KiB blocks of chunks, each with a 7-byte
    header (CRC, length, type: 1 whole, 2 first, 3 middle, 4 last), after the file's 7-byte
    header; every record is a ``wandb_internal_pb2.Record``."""

    def __init__(self, job: Path) -> None:
        from wandb.proto import wandb_internal_pb2

        self.config, self.summary_metrics, self._history = {}, {}, []
        for path in sorted(job.glob("wandb/offline-run-*/run-*.wandb")):
            for record in _wandb_records(path.read_bytes(), wandb_internal_pb2.Record):
                kind = record.WhichOneof("record_type")
                if kind == "run":
                    run = record.run
                    self.name, self.id = run.display_name, run.run_id
                    self.config |= {u.key: json.loads(u.value_json) for u in run.config.update}
                elif kind == "history":
                    self._history.append(
                        {_item_key(i): json.loads(i.value_json) for i in record.history.item}
                    )
                elif kind == "summary":
                    self.summary_metrics |= {
                        _item_key(u): json.loads(u.value_json) for u in record.summary.update
                    }
        self.path = ["e", "sparselm", self.id]

    def scan_history(self):
        return iter(self._history)


def _item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _wandb_records(data: bytes, record_type):
    block, pos, payload = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = record_type()
            record.ParseFromString(payload)
            payload = b""
            yield record


def offline_runs(study_dir: Path) -> list[OfflineRun]:
    """Every job of a study's results folder as the W&B run it logged offline; fails unless
    every finished job (a folder holding a metrics.json) logged one."""
    logged = sorted({p.parents[2] for p in study_dir.rglob("wandb/offline-run-*/run-*.wandb")})
    jobs = finished_jobs(study_dir)
    assert jobs == logged, "a finished job logged no W&B run, or a run has no job"
    return [OfflineRun(job) for job in logged]


def assert_wandb_outputs_are_the_files(study: str, results: Path, runs: list) -> None:
    """Every table and figure the study declares, made from its W&B ``runs`` by
    ``analysis.wandb_compare``, holds the numbers made from its results folder (whose runs table
    is built): a table's numbers, a figure's plotted numbers, each as its CSV holds them, to rel
    1e-9 (the runs arrive in another order, so a mean may sum in another order)."""
    import io

    import pandas as pd

    from analysis import build, wandb_compare
    from analysis.study_runs import from_files

    kinds = ("tables", "figures")
    declaration = wandb_compare.study_declaration(study, kinds=kinds)
    made, _ = wandb_compare.study_outputs(declaration, runs, kinds)
    study_runs = from_files(results, declaration.layout)
    for kind in kinds:
        files = build.make_outputs(declaration, kind, build.read_runs(results), study_runs)
        assert sorted(made[kind]) == sorted(files) == sorted(getattr(declaration, kind))
        for stem, outputs in files.items():
            numbers = 1 if kind == "figures" else 0  # (figure, plotted) or (numbers, Markdown)
            ours, theirs = (
                pd.read_csv(io.StringIO(frame.to_csv(index=False)))
                for frame in (made[kind][stem][numbers], outputs[numbers])
            )
            pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-9, obj=stem)

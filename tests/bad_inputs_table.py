"""Bad inputs to the entry points and what each prints: the source of ``docs/bad_inputs.md``.

    python tests/bad_inputs_table.py            # rewrite docs/bad_inputs.md
    python tests/bad_inputs_table.py --check    # exit 1 if the committed table is stale

Each case runs an entry point's ``main`` in this process (as ``run_cli`` would: a
``SparselmError`` is the line ``error: <message>`` and exit code 2) against small smoke runs
made once in a scratch folder. ``tests/test_bad_inputs.py`` runs the same cases, checks each
prints one line naming what is wrong, and that the committed table is what they print today.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad_inputs.md"
SMOKE = ("scale=smoke", "logger=none", "train.eval_every=0", "train.ckpt_every=0")
PRETRAIN = (*SMOKE, "train.steps=2")
FINETUNE = ("scale=smoke", "logger=none", "task=e2e", "train.steps=1")


@dataclass(frozen=True)
class Case:
    group: str
    what: str  # the bad input, as a user would type it
    stage: str  # pretrain | finetune | evaluate | export
    argv: tuple[str, ...]  # ``{name}`` is the folder ``Workspace.folder(name)``
    expect: tuple[str, ...]  # substrings the one line must hold


RERUN = "A rerun into an existing run folder"
BOOL = "Strings read as booleans"
TRACE = "Tracebacks where one line belongs"
SILENT = "Accepted silently"

CASES: tuple[Case, ...] = (
    Case(RERUN, "`method.level=0.5` into an unfinished 0.75 run", "pretrain",
         (*PRETRAIN, "method=static", "method.level=0.5", "hydra.run.dir={unfinished}"),
         ("method.level: 0.75 (saved) vs 0.5 (now)",)),
    Case(RERUN, "a dense config over a sparse run", "pretrain",
         (*PRETRAIN, "hydra.run.dir={unfinished}"), ("method.name: 'static' (saved)",)),
    Case(RERUN, "`method=static` over a dense run", "pretrain",
         (*PRETRAIN, "method=static", "method.level=0.75", "hydra.run.dir={dense}"),
         ("method.name: 'none' (saved) vs 'static' (now)",)),
    Case(RERUN, "`model.n_layer=3` into a 2-layer run", "pretrain",
         (*PRETRAIN, "model.n_layer=3", "hydra.run.dir={dense}"),
         ("model.n_layer: 2 (saved) vs 3 (now)",)),
    Case(RERUN, "`train.steps=4` into a finished 2-step run", "pretrain",
         (*SMOKE, "train.steps=4", "hydra.run.dir={dense}"), ("train.steps: 2 (saved) vs 4",)),
    Case(RERUN, "`resume=false` into a folder holding a run", "pretrain",
         (*PRETRAIN, "resume=false", "hydra.run.dir={dense}"),
         ("already holds a run", "overwrite=true")),
    Case(RERUN, "`overwrite=true` into a folder that is not a run", "pretrain",
         (*PRETRAIN, "overwrite=true", "hydra.run.dir={notes}"), ("'notes.txt'", "not deleting")),
    Case(RERUN, "fine-tune from an unfinished run", "finetune",
         (*FINETUNE, "pretrained={unfinished}", "hydra.run.dir={out}/ft"),
         ("pretrained=", "unfinished run", "checkpoints/step_<N>")),
    Case(RERUN, "evaluate an unfinished run", "evaluate",
         ("logger=none", "checkpoint={unfinished}", "hydra.run.dir={out}/ev"),
         ("checkpoint=", "unfinished run")),
    Case(BOOL, "`finetune.keep_mask=no`", "finetune",
         (*FINETUNE, "pretrained={sparse}", "finetune.keep_mask=no", "hydra.run.dir={out}/ft"),
         ("finetune.keep_mask='no' must be true or false",)),
    Case(BOOL, "`resume=no`", "pretrain", (*PRETRAIN, "resume=no", "hydra.run.dir={out}/p"),
         ("resume='no' must be true or false",)),
    Case(BOOL, "`resume=maybe`", "pretrain", (*PRETRAIN, "resume=maybe", "hydra.run.dir={out}/p"),
         ("resume='maybe' must be true or false",)),
    Case(BOOL, "`overwrite=yes`", "pretrain", (*PRETRAIN, "overwrite=yes", "hydra.run.dir={out}/p"),
         ("overwrite='yes' must be true or false",)),
    Case(BOOL, "`logger.enabled=on`", "pretrain",
         (*PRETRAIN, "logger.enabled=on", "hydra.run.dir={out}/p"),
         ("logger.enabled='on' must be true or false",)),
    Case(BOOL, "`method.mask_grads=no` (typed keys: refused before too)", "pretrain",
         (*PRETRAIN, "method=static", "method.mask_grads=no", "hydra.run.dir={out}/p"),
         ("method.mask_grads='no' must be of type bool",)),
    Case(BOOL, "`train.compile=no` (typed keys: refused before too)", "pretrain",
         (*PRETRAIN, "train.compile=no", "hydra.run.dir={out}/p"),
         ("train.compile='no' must be of type bool",)),
    Case(TRACE, "`seed=abc`", "pretrain", (*PRETRAIN, "seed=abc", "hydra.run.dir={out}/p"),
         ("seed='abc' must be an integer",)),
    Case(TRACE, "`device=tpu`", "pretrain", (*PRETRAIN, "device=tpu", "hydra.run.dir={out}/p"),
         ("device='tpu' is unknown",)),
    Case(TRACE, "`train.micro_batch_size=0`", "pretrain",
         (*PRETRAIN, "train.micro_batch_size=0", "hydra.run.dir={out}/p"),
         ("train.micro_batch_size=0 must be >= 1",)),
    Case(TRACE, "`train.seq_len=128` (smoke `block_size` is 64)", "pretrain",
         (*PRETRAIN, "train.seq_len=128", "hydra.run.dir={out}/p"),
         ("train.seq_len=128 is larger than model.block_size=64",)),
    Case(TRACE, "fine-tune `train.steps=abc`", "finetune",
         (*FINETUNE, "pretrained={sparse}", "train.steps=abc", "hydra.run.dir={out}/ft"),
         ("train.steps='abc' must be an integer or null",)),
    Case(TRACE, "fine-tune `train.epochs=abc`", "finetune",
         (*FINETUNE[:-1], "pretrained={sparse}", "train.epochs=abc", "hydra.run.dir={out}/ft"),
         ("train.epochs='abc' must be a number > 0",)),
    Case(TRACE, "fine-tune `task.subset_seed=abc`", "finetune",
         (*FINETUNE, "pretrained={sparse}", "task.subset_seed=abc", "hydra.run.dir={out}/ft"),
         ("task.subset_seed='abc' must be an integer",)),
    Case(TRACE, "fine-tune from a truncated `model.safetensors`", "finetune",
         (*FINETUNE, "pretrained={truncated}", "hydra.run.dir={out}/ft"),
         ("model.safetensors: not a readable safetensors file",)),
    Case(TRACE, "evaluate a garbage `model.safetensors`", "evaluate",
         ("logger=none", "checkpoint={garbage}", "limit=2", "hydra.run.dir={out}/ev"),
         ("model.safetensors: not a readable safetensors file",)),
    Case(TRACE, "export a truncated `model.safetensors`", "export",
         ("checkpoint={truncated}", "out={out}/hf"),
         ("model.safetensors: not a readable safetensors file",)),
    Case(TRACE, "a right-sized token shard holding ids outside the vocabulary", "pretrain",
         (*PRETRAIN, "paths.prepared_dir={badvocab}", "hydra.run.dir={out}/p"),
         ("train.bin: holds token id 65535", "model.vocab_size=1024")),
    Case(TRACE, "a torn `state.json`", "finetune",
         (*FINETUNE, "pretrained={tornstate}", "hydra.run.dir={out}/ft"),
         ("state.json: unreadable",)),
    Case(SILENT, "`+model.nlayer=5`", "pretrain",
         (*PRETRAIN, "+model.nlayer=5", "hydra.run.dir={out}/p"), ("model.nlayer",)),
    Case(SILENT, "fine-tune `+finetune.keep_mask_typo=true`", "finetune",
         (*FINETUNE, "pretrained={sparse}", "+finetune.keep_mask_typo=true",
          "hydra.run.dir={out}/ft"), ("finetune.keep_mask_typo",)),
    Case(SILENT, "`train.ckpt_every=-5`", "pretrain",
         (*PRETRAIN[:-1], "train.ckpt_every=-5", "hydra.run.dir={out}/p"),
         ("train.ckpt_every=-5 must be >= 0",)),
    Case(SILENT, "`train.keep_checkpoints=-1`", "pretrain",
         (*PRETRAIN, "train.keep_checkpoints=-1", "hydra.run.dir={out}/p"),
         ("train.keep_checkpoints=-1 must be >= 0",)),
    Case(SILENT, "a checkpoint holding an extra tensor of another shape", "finetune",
         (*FINETUNE, "pretrained={extra}", "hydra.run.dir={out}/ft"),
         ("holds tensor 'extra.weight', which this model does not have",)),
    Case(SILENT, "a checkpoint whose weights are NaN", "finetune",
         (*FINETUNE, "pretrained={nan}", "hydra.run.dir={out}/ft"),
         ("tensor 'wte.weight' holds NaN or inf values",)),
)  # fmt: skip


class Workspace:
    """Two smoke runs (2 steps: a 75 % static one and a dense one) and damaged copies."""

    def __init__(self, root: Path, prepared: Path) -> None:
        self.root, self.prepared = Path(root), Path(prepared)
        self.folders: dict[str, Path] = {"out": self.root / "out"}

    def build(self) -> Workspace:
        sparse = self._pretrain("sparse", "method=static", "method.level=0.75")
        self._pretrain("dense")
        unfinished = self._copy(sparse, "unfinished")
        (unfinished / "metrics.json").unlink()
        notes = self.root / "notes"
        notes.mkdir()
        (notes / "notes.txt").write_text("not a run\n")
        self.folders["notes"] = notes
        _truncate(self._weights(self._copy(sparse, "truncated")))
        self._weights(self._copy(sparse, "garbage")).write_bytes(b"\x07" * 4096)
        self._edit_weights(self._copy(sparse, "extra"), _add_extra)
        self._edit_weights(self._copy(sparse, "nan"), _make_nan)
        torn = _checkpoint(self._copy(sparse, "tornstate")) / "state.json"
        torn.write_text(torn.read_text()[:40])
        self.folders["badvocab"] = _bad_vocab_shards(self.prepared, self.root / "badvocab")
        return self

    def folder(self, name: str) -> Path:
        return self.folders[name]

    def argv(self, case: Case) -> list[str]:
        names = {k: str(v) for k, v in self.folders.items()}
        return [a.format(**names) for a in case.argv]

    def _pretrain(self, name: str, *args: str) -> Path:
        out = self.root / name
        code, line = run_entry("pretrain", [*PRETRAIN, *args, f"hydra.run.dir={out}"])
        if code != 0:
            raise RuntimeError(f"the {name} smoke run failed: {line}")
        self.folders[name] = out
        return out

    def _copy(self, src: Path, name: str) -> Path:
        dst = self.root / name
        shutil.copytree(src, dst)
        self.folders[name] = dst
        return dst

    @staticmethod
    def _weights(run: Path) -> Path:
        return _checkpoint(run) / "model.safetensors"

    def _edit_weights(self, run: Path, edit) -> None:
        from safetensors.torch import load_file, save_file

        file = self._weights(run)
        tensors = load_file(file)
        edit(tensors)
        save_file(tensors, file)


def _checkpoint(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _add_extra(tensors: dict) -> None:
    import torch

    tensors["extra.weight"] = torch.zeros(3, 5)


def _make_nan(tensors: dict) -> None:
    tensors["wte.weight"][0, 0] = float("nan")


def _bad_vocab_shards(prepared: Path, dst: Path) -> Path:
    """A copy of the prepared smoke data whose train shard keeps its size but holds 65535s."""
    shutil.copytree(prepared, dst)
    for manifest in (dst / "shards").glob("*/manifest.json"):
        info = json.loads(manifest.read_text())["splits"]["train"]
        shard = manifest.parent / info["file"]
        shard.write_bytes(b"\xff" * shard.stat().st_size)
    return dst


def run_entry(stage: str, argv: list[str]) -> tuple[int, str]:
    """(exit code, last stderr line) of ``python -m sparselm.cli.<stage> argv``, in process."""
    from sparselm.errors import SparselmError

    main = importlib.import_module(f"sparselm.cli.{stage}").main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv)) or 0
        except SparselmError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 2
    lines = err.getvalue().strip().splitlines()
    return code, lines[-1] if lines else ""


@contextlib.contextmanager
def prepared_dir(path: Path) -> Iterator[None]:
    """Point ``SPARSELM_PREPARED_DIR`` (tokenizers, shards) at ``path`` meanwhile."""
    old = os.environ.get("SPARSELM_PREPARED_DIR")
    os.environ["SPARSELM_PREPARED_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SPARSELM_PREPARED_DIR", None)
        else:
            os.environ["SPARSELM_PREPARED_DIR"] = old


def run_cases(ws: Workspace) -> dict[Case, tuple[int, str]]:
    """What each case prints, with the scratch folder written as ``<tmp>``."""
    out = {}
    for case in CASES:
        code, line = run_entry(case.stage, ws.argv(case))
        out[case] = (code, line.replace(str(ws.root), "<tmp>"))
    return out


def markdown(results: dict[Case, tuple[int, str]]) -> str:
    lines = [
        "# Bad inputs and what each prints",
        "",
        "Generated by `python tests/bad_inputs_table.py` (`tests/test_bad_inputs.py` checks it is",
        "current). Every case runs `python -m sparselm.cli.<entry point> scale=smoke ...`",
        "(fine-tuning: `task=e2e`) against 2-step smoke runs in a scratch folder, written",
        "`<tmp>`; the exact arguments are in that script. Each prints one line on stderr and",
        "exits with the code shown; a refused rerun leaves the run folder untouched.",
        "",
    ]
    for group in dict.fromkeys(c.group for c in CASES):
        lines += [f"## {group}", "", "| input | entry point | exit | prints |", "|---|---|---|---|"]
        for case in (c for c in CASES if c.group == group):
            code, line = results[case]
            shown = line.replace("|", "\\|")
            lines.append(f"| {case.what} | {case.stage} | {code} | `{shown}` |")
        lines.append("")
    lines += [
        "## Also refused (tested in `tests/test_bad_inputs.py`; each needs a job or Snakemake)",
        "",
        "- A fine-tuning rerun whose `pretrained=` (or `teacher=`) run was trained again: the",
        "  run folder's `start.json` records the starting weights' sha256.",
        "- `zeroshot_tasks: [nonexistent_task]` in a study config: `snakemake -n` fails while the",
        "  DAG is built, naming `<study>.grids.<scale>.zeroshot_tasks` and the task.",
        "- A second pipeline on a `results_dir` in use: one line naming the holder's pid and host",
        "  (`<results_dir>/.sparselm.lock`, an `flock` the kernel releases when the holder dies).",
        "",
        "## Handled without an error",
        "",
        "- A torn last line in `train_log.jsonl` (a kill mid-write) is dropped on resume; the log",
        "  is rewritten atomically.",
        "- `overwrite=true` replaces the run a folder holds, whole (`resume=false` alone is",
        "  refused).",
        "- Keys that may change when a run is resumed: `sparselm.cli.run_folder.RESUMABLE_KEYS`.",
        "",
    ]
    return "\n".join(lines)


def generate(data_dir: Path | None = None) -> str:
    """Build the scratch runs, run every case, return the Markdown table."""
    if data_dir is not None:
        os.environ.setdefault("SPARSELM_DATA_DIR", str(data_dir))
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as tmp:
        prepared = Path(os.environ.get("SPARSELM_PREPARED_DIR") or Path(tmp) / "prepared")
        with prepared_dir(prepared):
            ws = Workspace(Path(tmp), prepared).build()
            return markdown(run_cases(ws))


if __name__ == "__main__":
    for key, value in (("WANDB_MODE", "offline"), ("HF_HUB_OFFLINE", "1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("SPARSELM_DATA_DIR", str(ROOT.parent / "shared" / "data"))  # as .ci/run
    text = generate()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if DOC.is_file() and DOC.read_text() == text else 1)
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")

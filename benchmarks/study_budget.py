"""How long a study takes on one GPU: the compute of every job in its Snakemake DAG.

    python benchmarks/study_budget.py --scale gpu [--studies spdf raptr] [--mfu 0.4]
        [--peak-tflops 790] [--out benchmarks/results/study_budget_gpu.md]

Snakemake's dry run (``-n -p``) lists the shell command of every job of ``reproduce_<study>``;
each training command's overrides are composed into its Hydra config exactly as the job would,
giving its steps, batch, sequence length and model (a fine-tune's model is the one of the run
it starts from). Training FLOPs are ``flops.train_flops_per_token`` of the dense model times
the tokens the job processes (fine-tuning batches counted at full ``train.seq_len``; a
distillation teacher's forward adds a third). Masks do not make a step faster on a GPU, so
sparse runs cost what dense ones do; RaPTr, stacking and layer drop are charged as dense too
(an upper bound). Time = FLOPs / (peak x MFU) plus fixed costs per job, all printed in the
header; evaluation jobs are charged a fixed time each, plus, for NLG generation, the rows
decoded (test inputs, capped by the job's ``limit``, times its beams) at an assumed
``--nlg-rows-per-s`` (measure it with ``benchmarks/eval_speed.py --cuda-row``). Batched decoding
of a small model is bound by kernel launches and Python, not by the GPU's arithmetic, so it is
charged as wall time that overlaps with the jobs beside it, like fixed costs. Jobs of a stage
share the GPU as the local profile lets them (``gpu_share`` in
``pipelines/config/default.yaml``: a job holding 25 % runs beside three others): their fixed
costs overlap, their compute does not, so a stage takes the longer of its summed compute and
its jobs packed onto that many slots. Stages follow one
another. It is a plan to check against a measured run (``gpu_throughput.py`` gives the MFU),
not a measurement.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import shlex
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from sparselm.cli.common import compose_config
from sparselm.cli.finetune import finetune_steps, train_pool
from sparselm.data.task_batches import subset_indices
from sparselm.data.tasks import load_task
from sparselm.flops import ModelShape, train_flops_per_token

REPO = Path(__file__).resolve().parents[1]
# every declared study (analysis.study_declaration.declared_studies; analysis/ is not installed)
STUDIES = tuple(
    sorted(p.stem for p in (REPO / "pipelines/studies").glob("*.yaml") if p.stem != "schema")
)
TRAINING = ("pretrain", "finetune", "sparse_finetune")
PREFIX = "python -m sparselm.cli."


@dataclass(frozen=True)
class Assumptions:
    peak_flops: float  # the GPU's bf16 matmul rate
    mfu: float  # achieved fraction of it in training
    job_start_s: float  # process start, imports, data and checkpoint loading
    compile_s: float  # torch.compile of the blocks, when train.compile is on
    eval_job_s: float  # one lm-eval job (scoring or generation), whole
    nlg_rows_per_s: float = 200.0  # generated beam rows per second in one NLG eval job


@dataclass
class JobCost:
    stage: str
    tokens: float = 0.0
    flops: float = 0.0
    seconds: float = 0.0  # the whole job, alone on the GPU
    compute_s: float = 0.0  # of which the GPU is busy training


@functools.cache
def gpu_shares() -> dict[str, dict[str, int]]:
    return yaml.safe_load((REPO / "pipelines/config/default.yaml").read_text())["gpu_share"]


def jobs_at_once(stage: str, scale: str) -> int:
    """How many jobs of this stage the local profile runs side by side on one GPU."""
    shares = gpu_shares()
    kind = "scoring" if stage == "evaluate" else "training" if stage in TRAINING else None
    share = shares[kind][scale] if kind else 0
    return 100 // share if share else 1


def stage_seconds(costs: list[JobCost], slots: int) -> float:
    """Longest-first packing onto ``slots``, but never less than the stage's summed compute."""
    loads = [0.0] * slots
    for seconds in sorted((c.seconds for c in costs), reverse=True):
        heapq.heapreplace(loads, loads[0] + seconds)
    return max(max(loads), sum(c.compute_s for c in costs))


def dag_commands(study: str, scale: str, data_dir: Path) -> list[tuple[str, list[str]]]:
    """(entry point, overrides) of every job of ``reproduce_<study>`` from a fresh results dir."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "snakemake", "-n", "-p", f"reproduce_{study}", "--config"]
        cmd += [f"scale={scale}", f"data_dir={data_dir}", f"results_dir={tmp}/results"]
        cmd += [f"reports_dir={tmp}/reports"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"study_budget: snakemake -n failed for {study}: {proc.stderr[-500:]}")
    jobs = []
    for line in proc.stdout.splitlines():
        # the entry point is the last command of a line (a pinned MST job reads its knob first)
        start = line.rfind(PREFIX)
        if start < 0:
            continue
        # `$pin` (the pinned knob, known only when the job runs) does not change the job's cost
        words = [w for w in shlex.split(line[start:].split(" > ")[0]) if not w.startswith("$")]
        jobs.append((words[2].removeprefix("sparselm.cli."), words[3:]))
    return jobs


def value(overrides: list[str], key: str) -> str | None:
    hits = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    return hits[-1] if hits else None


def shape_of(cfg: DictConfig, seq_len: int) -> ModelShape:
    m = cfg.model
    return ModelShape(m.n_layer, m.d_model, m.n_head, m.d_ff, seq_len, m.vocab_size)


def train_examples(cfg: DictConfig) -> int:
    """How many examples the job trains on, by the entry point's own subset rules."""
    data_dir = Path(cfg.paths.data_dir)
    split_map = dict(cfg.task.split_map) if cfg.task.get("split_map") else None
    examples = load_task(cfg.task.name, "train", data_dir, split_map)
    pool = train_pool(examples, float(cfg.task.pool_fraction), int(cfg.task.subset_seed))
    return len(subset_indices(len(pool), float(cfg.task.fraction), int(cfg.task.subset_seed)))


class Planner:
    """Costs the jobs in DAG order; remembers each run's model for the jobs that start from it."""

    def __init__(self, a: Assumptions, data_dir: Path | None = None) -> None:
        self.a, self.data_dir = a, data_dir
        self.models: dict[str, DictConfig] = {}  # run dir -> composed model config
        self.examples: dict[tuple[Any, ...], int] = {}

    def cost(self, stage: str, overrides: list[str]) -> JobCost:
        if stage not in TRAINING:
            seconds = (
                self.a.eval_job_s + self.nlg_seconds(overrides)
                if stage == "evaluate"
                else self.a.job_start_s
            )
            return JobCost(stage, seconds=seconds)
        cfg, run_dir = compose_config(stage, overrides)
        origin = value(overrides, "pretrained") or value(overrides, "teacher")
        model = self.models[origin] if origin else cfg
        self.models[str(run_dir)] = model
        seq = min(int(cfg.train.seq_len), int(model.model.block_size))
        if stage == "pretrain":
            steps = int(cfg.train.steps)
        else:
            key = (cfg.task.name, cfg.task.pool_fraction, cfg.task.fraction, cfg.task.subset_seed)
            if key not in self.examples:
                self.examples[key] = train_examples(cfg)
            steps = finetune_steps(cfg, self.examples[key])
        tokens = steps * int(cfg.train.micro_batch_size) * int(cfg.train.grad_accum) * seq
        per_token = train_flops_per_token(shape_of(model, seq))["total"]
        distill = cfg.get("distill")
        if distill is not None and (distill.kl > 0 or distill.squarehead > 0):
            per_token *= 4 / 3  # the teacher's forward pass: a third of a training step
        flops = tokens * per_token
        compute_s = flops / (self.a.peak_flops * self.a.mfu)
        seconds = compute_s + self.a.job_start_s
        if cfg.train.get("compile"):
            seconds += self.a.compile_s
        return JobCost(stage, tokens, flops, seconds, compute_s)

    def nlg_seconds(self, overrides: list[str]) -> float:
        """Decoding time of an evaluation job's NLG tasks (0 for scoring-only jobs)."""
        tasks = (value(overrides, "tasks") or "").strip("[]").split(",")
        limit = value(overrides, "limit")
        beams = int(value(overrides, "generation.num_beams") or 1)
        inputs = sum(
            min(
                nlg_test_size(t, self.data_dir),
                int(limit) if limit not in (None, "null") else 10**9,
            )
            for t in tasks
            if t in NLG_LOADERS
        )
        return inputs * beams / self.a.nlg_rows_per_s


NLG_LOADERS = {
    "sparselm_e2e_nlg": "load_e2e_nlg",
    "sparselm_webnlg": "load_webnlg",
    "sparselm_dart": "load_dart",
}


@functools.cache
def nlg_test_size(task: str, data_dir: Path | None) -> int:
    from sparselm.evaluation.tasks import utils

    return len(getattr(utils, NLG_LOADERS[task])(str(data_dir) if data_dir else None)["test"])


def study_table(study: str, scale: str, data_dir: Path, a: Assumptions) -> tuple[list[str], float]:
    planner = Planner(a, data_dir)
    by_stage: dict[str, list[JobCost]] = defaultdict(list)
    for stage, overrides in dag_commands(study, scale, data_dir):
        by_stage[stage].append(planner.cost(stage, overrides))
    lines = [
        f"## {study} at scale={scale}",
        "",
        "| stage | jobs | tokens | PFLOP | minutes, one at a time | at once | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    total = serial = 0.0
    for stage, costs in by_stage.items():
        slots = jobs_at_once(stage, scale)
        alone, seconds = sum(c.seconds for c in costs), stage_seconds(costs, slots)
        serial, total = serial + alone, total + seconds
        tokens, flops = sum(c.tokens for c in costs), sum(c.flops for c in costs)
        cells = [stage, str(len(costs)), f"{tokens / 1e6:,.0f}M" if tokens else "-"]
        cells += [f"{flops / 1e15:,.1f}" if flops else "-", f"{alone / 60:,.1f}", str(slots)]
        cells.append(f"{seconds / 60:,.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    jobs = sum(map(len, by_stage.values()))
    lines.append(f"| **total** | {jobs} | | | {serial / 60:,.0f} | | **{total / 60:,.0f}** |")
    return lines, total


def report(studies: list[str], scale: str, data_dir: Path, a: Assumptions) -> str:
    lines = [
        f"# Study budget at scale={scale}: a plan, not a measurement",
        "",
        f"Command: `python {shlex.join(sys.argv)}`.",
        "",
        f"Assumptions: {a.peak_flops / 1e12:.0f} TFLOP/s bf16 peak at {a.mfu:.0%} MFU "
        f"({a.peak_flops * a.mfu / 1e12:.0f} TFLOP/s achieved); {a.job_start_s:.0f} s to start "
        f"each job, {a.compile_s:.0f} s more where train.compile is on; {a.eval_job_s:.0f} s "
        f"per evaluation job plus NLG decoding at {a.nlg_rows_per_s:.0f} beam rows/s per job "
        "(an assumption until `eval_speed.py --cuda-row` measures it). One GPU, shared as the "
        "local profile lets jobs share it.",
        "",
    ]
    totals = []
    for study in studies:
        table, seconds = study_table(study, scale, data_dir, a)
        lines += [*table, ""]
        totals.append(f"{study} {seconds / 60:,.0f} min")
    lines.append("Totals: " + ", ".join(totals) + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="gpu")
    p.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 matmul rate (H200)")
    p.add_argument("--mfu", type=float, default=0.40, help="achieved fraction of the peak")
    p.add_argument("--job-start-s", type=float, default=30.0)
    p.add_argument("--compile-s", type=float, default=60.0)
    p.add_argument("--eval-job-s", type=float, default=60.0)
    p.add_argument(
        "--nlg-rows-per-s",
        type=float,
        default=200.0,
        help="beam rows an NLG eval job decodes per second (examples/s x beams)",
    )
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if not 0 < args.mfu <= 1 or args.peak_tflops <= 0:
        p.error("--mfu must be in (0, 1] and --peak-tflops > 0")
    a = Assumptions(
        args.peak_tflops * 1e12,
        args.mfu,
        args.job_start_s,
        args.compile_s,
        args.eval_job_s,
        args.nlg_rows_per_s,
    )
    text = report(args.studies, args.scale, args.data_dir.resolve(), a)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

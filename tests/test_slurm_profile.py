"""The SLURM profile through the real executor plugin: what each rule asks sbatch for.

SLURM's commands are replaced by small scripts on PATH: ``sbatch`` records its arguments and
answers a job id, the account and status queries answer nothing. Snakemake submits the jobs
whose inputs exist, then waits for statuses that never come, and is killed there (without
a lock, so none is left behind).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# jobs are submitted concurrently: each call gets a file of its own
FAKE_SBATCH = """#!/bin/bash
echo "$*" > "$(mktemp {calls}/call.XXXXXX)"
echo $((4000 + RANDOM))
"""


def fake_slurm(tmp: Path) -> tuple[Path, Path]:
    bin_dir, calls = tmp / "bin", tmp / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    scripts = {"sbatch": FAKE_SBATCH.format(calls=calls)}
    scripts |= {name: "#!/bin/bash\necho abc123\n" for name in ("sacctmgr", "sshare")}
    scripts |= {
        name: "#!/bin/bash\nexit 0\n"
        for name in ("sacct", "squeue", "sinfo", "scontrol", "scancel")
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir, calls


def submitted(targets: list[Path], tmp: Path, data_dir: Path) -> dict[str, str]:
    """Rule name -> the sbatch arguments Snakemake used for it."""
    bin_dir, calls = fake_slurm(tmp)
    results = tmp / "results"
    cmd = [sys.executable, "-m", "snakemake", "--nolock", "--profile", "pipelines/profiles/slurm"]
    cmd += [str(t) for t in targets] + ["--slurm-logdir", str(tmp / "slurm_logs")]
    cmd += ["--config", "scale=gpu", f"data_dir={data_dir}", f"results_dir={results}"]
    cmd += [f"reports_dir={tmp}/reports", "device=cuda"]
    env = os.environ | {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while len(list(calls.iterdir())) < len(targets) and proc.poll() is None:
            assert time.monotonic() < deadline, "snakemake submitted too few jobs in 120 s"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # it would wait for the jobs to finish
        output = proc.communicate(timeout=60)[0]
    args = [path.read_text() for path in sorted(calls.iterdir())]
    assert len(args) == len(targets), output[-3000:]
    by_rule = {}
    for line in args:
        rule = line.split("--comment rule_")[1].split("_wildcards")[0].split()[0]
        by_rule[rule] = line.split("--wrap")[0]
    return by_rule


def test_gpu_rules_ask_for_a_gpu_and_cpu_rules_do_not(tmp_path, data_dir):
    prepared = tmp_path / "results" / "spdf" / "prepare"
    (prepared / "shards").mkdir(parents=True)
    (prepared / "tokenizer.json").write_text("{}")  # pretraining's inputs, as if prepared
    (prepared / "shards" / "manifest.json").write_text("{}")
    targets = [
        tmp_path / "results/spdf/pretrain/s0.75_seed0/metrics.json",  # a GPU rule
        tmp_path / "results/raptr/prepare/tokenizer.json",  # a CPU rule
    ]
    jobs = submitted(targets, tmp_path, data_dir)
    assert set(jobs) == {"pretrain", "train_tokenizer"}
    gpu, cpu = jobs["pretrain"].split(), jobs["train_tokenizer"].split()
    assert "--gres=gpu:1" in gpu and gpu[gpu.index("-p") + 1] == "gpu"
    assert gpu[gpu.index("-t") + 1] == "180" and "--cpus-per-task=8" in gpu
    assert gpu[gpu.index("--mem") + 1] == "64000"
    assert not any(a.startswith("--gres") or a.startswith("--gpus") for a in cpu)
    assert cpu[cpu.index("-p") + 1] == "cpu"
    assert cpu[cpu.index("-t") + 1] == "60" and cpu[cpu.index("--mem") + 1] == "8000"

"""The machine a run trained on, recorded in its ``metrics.json`` (``environment``).

The same code, seed and data give bit-identical runs on one machine, but another CPU's or
GPU's kernels round differently, and a few hundred steps later the losses differ in the third
decimal (docs/measurements.md, "Rerunning the `tiny` studies on another machine"). A report
names the machines its runs trained on, so a reader comparing a rerun knows which numbers to
expect bit for bit.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux), else what ``platform`` knows of it."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """CPU, accelerator, torch and Python versions, intra-op threads and ranks of this job."""
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return {
        "cpu": cpu_name(),
        "accelerator": accelerator,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
    }

"""The step-memory count: the chunked LM-head loss lowers the peak where the logits dominate."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_memory.py"


def _load():
    spec = importlib.util.spec_from_file_location("step_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_chunked_loss_lowers_the_counted_peak_and_the_table_shows_it(tmp_path, capsys):
    script = _load()
    out = tmp_path / "m.md"
    args = ["--model", "tiny", "--vocab", "32768", "--batch", "8", "--seq", "128"]
    assert script.main([*args, "--chunks", "128", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|\n").split("|")]
        for line in text.splitlines()
        if line.startswith("| 0 (full logits)") or line.startswith("| 128 ")
    }
    full, chunked = float(rows["0 (full logits)"][6]), float(rows["128"][6])
    # 1024 tokens x 32768 logits in fp32 (128 MiB) and their gradient dominate this toy step
    assert chunked < 0.5 * full
    assert rows["128"][7].endswith("x") and float(rows["128"][7][:-1]) < 0.5

"""The GPU throughput benchmark: its tiny CPU mode runs every table, its CUDA mode needs a GPU."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparselm.attention import pick_route
from sparselm.flops import ModelShape, train_flops_per_token
from sparselm.methods.hsa import flop_attn_density

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_throughput.py"


def bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def load_script():
    if str(BENCHMARKS) not in sys.path:  # its sibling modules, found as when run as a script
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rows(text: str, first_cells: tuple[str, ...]) -> dict[str, list[str]]:
    """Table rows keyed by their first cell, for the first cells asked for."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in first_cells:
            out[cells[0]] = cells
    return out


def number(cell: str) -> float:
    value = float(cell.rstrip("x").replace(",", ""))
    assert math.isfinite(value) and value > 0, cell
    return value


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("bench") / "r.md"
    return bench("--device", "cpu", "--steps", "1", "--out", str(out)), out


def test_cpu_mode_prints_every_table(cpu_report):
    out, path = cpu_report
    assert out == path.read_text()
    for needle in (
        "matmul rate",
        "| dense |",
        "| dense, full logits |",
        "| static 75% |",
        "| RaPTr, path 6/12 |",
        "Hybrid sparse attention",
        "MST phases",
        "2:4",
    ):
        assert needle in out, needle
    assert "failed" not in out
    static = next(line for line in out.splitlines() if line.startswith("| static 75%"))
    assert "| 2.00x |" in static  # 75% on every block linear halves the toy model's FLOPs


def test_hsa_rows_predict_from_the_ledger_and_name_the_auto_route(cpu_report):
    out, _ = cpu_report
    script = load_script()
    s = script.setting(script.parse_args(["--device", "cpu"]))
    patterns = importlib.import_module("gpu_method_rows").HSA_PATTERNS
    names = tuple(f"HSA {p}" for p in patterns)
    table = rows(out, names)
    assert set(table) == set(names)
    shape = ModelShape(
        s.model.n_layer, s.model.d_model, s.model.n_head, s.model.d_ff, s.seq, s.model.vocab_size
    )
    dense = train_flops_per_token(shape)["total"]
    for pattern in patterns:
        _, route, density, ms, tps, predicted, causal_half, measured = table[f"HSA {pattern}"]
        assert route == pick_route(pattern, "auto", torch.device("cpu"), s.seq, s.stride)
        expected_density = flop_attn_density(pattern, s.seq, s.stride, "megatron_full_attn")
        # cells are rounded to 3 and 2 decimals
        assert number(density) == pytest.approx(expected_density, abs=5.1e-4)
        sparse = train_flops_per_token(shape, attn_density=expected_density)["total"]
        assert number(predicted) == pytest.approx(dense / sparse, abs=5.1e-3)
        assert 1.0 < number(causal_half) < number(predicted)  # causal-half charges dense less
        for cell in (ms, tps, measured):
            number(cell)
    # T = 32 in chunks of 8: local, strided and fixed take the blocked kernels, sparse the mask
    assert table["HSA local"][1] == "blocked" and table["HSA sparse"][1] == "mask"


def test_mst_rows_cover_each_phase_and_an_update_step(cpu_report):
    out, _ = cpu_report
    phases = ("warmup", "ultra", "ultra, DST update", "restoration")
    table = rows(out, phases)
    assert set(table) == set(phases)
    predicted = {}
    for phase, cells in table.items():
        _, step, target, mask, attention, ms, ratio, measured = cells
        assert attention == ("on" if phase.startswith("ultra") else "off")
        number(ms), number(measured)
        predicted[phase] = number(ratio)
        assert 0.0 <= float(mask) < 1.0 and 0.0 <= float(target) < 1.0
    assert float(table["ultra"][3]) == pytest.approx(0.9, abs=1e-3)  # masks at s_max
    assert float(table["warmup"][3]) == pytest.approx(0.05, abs=1e-3)  # still the s_start masks
    assert float(table["restoration"][3]) < 0.01  # near dense
    # the update step pays the dense weight gradient on top of the ultra step's cost
    assert predicted["ultra"] > predicted["ultra, DST update"] > predicted["warmup"] >= 1.0
    assert predicted["restoration"] == pytest.approx(1.0, abs=0.01)
    whole = next(line for line in out.splitlines() if line.startswith("Whole run"))
    assert number(whole.split(": ")[1].split("x ")[0]) > 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_it_says_so_in_one_line():
    out = bench()
    assert out.count("\n") == 1 and "CUDA is not available" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mode_small():
    out = bench("--batch", "4", "--seq", "256", "--steps", "2", "--warmup", "1", "--no-compile")
    assert "bf16 matmul rate" in out and "| dense |" in out and "cusparselt" in out
    assert "| HSA sparse | flex |" in out and "| ultra, DST update |" in out
    assert "failed" not in out


def test_tables_picks_the_sections():
    out = bench("--device", "cpu", "--steps", "1", "--tables", "training", "nm")
    assert "| dense |" in out and "| dense, full logits |" in out and "2:4" in out
    assert "Hybrid sparse attention" not in out and "MST phases" not in out


def test_a_forced_attention_backend_runs_the_same_step():
    script = load_script()
    timing = importlib.import_module("gpu_step_timing")
    s = script.setting(script.parse_args(["--device", "cpu", "--steps", "1"]))
    forced = timing.run_variant(dataclasses.replace(s, sdpa="flash"), script.no_hooks)
    plain = timing.run_variant(s, script.no_hooks)
    assert forced["ledger_flops"] == plain["ledger_flops"] and forced["seconds"] > 0
    names = [name for name, _ in script.step_settings(s)]
    assert names == ["dense, full logits"]  # CPU: no compilation to compare, no cuDNN

"""MST (mst.md): dynamic sparse training, sparsity variation and hybrid sparse attention, composed.

The three parts live in their own modules (``sparsity/dst.py``, ``sparsity/variation.py``,
``methods/hsa.py``); this one decides how they fit together for one run:

- ``MSTPlan``: what is a function of the step (target sparsity, DST updates, the HSA window)
  and the whole-run FLOP ledger, computed from the model's shape alone, from the very same
  objects the hooks use, so the plan's FLOPs are what the training loop logs.
- ``solve``: when ``target_reduction`` is set, one knob (``s_max``, ``ultra_frac`` or, for a
  constant schedule, ``level``) is bisected so that the ledger's whole-run reduction hits it.
  Every variant of the MST study is solved to the same budget this way: the static and RigL
  baselines get the constant level whose FLOPs equal MST's average.
- ``build_hooks``: the ``DynamicSparsity`` hook, the ``HSAHook`` (on in the window) and a
  stateless ``MSTSchedule`` hook that logs the phase and the solved knob.

``python -m sparselm.methods.mst model=gpt2_small seq_len=1024`` prints the default schedule's
ledger under every FLOP convention (mst.md §4), the reduction with sparse attention counted on
both bases (``attention_bases``: full T² as mst.md §4 writes it, which the 4.0× target uses,
and causal pairs) and the ``s_max`` that gives 4.0×.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparselm.errors import ConfigError, SparselmError
from sparselm.flops import (
    DEFAULT_CONVENTION,
    ModelShape,
    load_model_config,
    shape_from_model_config,
    train_flops_per_token,
)
from sparselm.hooks import TrainHook
from sparselm.methods.hsa import HSAConfig, HSAHook, flop_attn_density, layer_patterns, step_window
from sparselm.model import GPT
from sparselm.sparsity.dst import DynamicSparsity
from sparselm.sparsity.dst_schedule import DSTConfig, DSTTimeline, model_targets
from sparselm.sparsity.variation import SparsityVariation, VariationConfig, ledger_conventions

SCHEDULES = ("variation", "constant")
WINDOWS = ("ultra", "steps")
SOLVE_KNOBS = ("auto", "s_max", "ultra_frac", "level")
# where each knob lives in the ``method`` group (conf/method/mst.yaml)
KNOB_KEYS = {
    "s_max": "sparsity.variation.s_max",
    "ultra_frac": "sparsity.variation.ultra_frac",
    "level": "sparsity.level",
}
# report key -> hsa.flop_basis (methods/hsa.py: how a sparse pattern's attention is counted)
BASES = {"full_t2": "full", "causal_pairs": "causal"}
SOLVE_TOL = 1e-3  # reduction above the target: far below what a loss difference can show


@dataclass(frozen=True)
class MSTConfig:
    """The ``method`` group of conf/method/mst.yaml, parsed (``cli/builders.py``).

    ``hsa=None`` runs dense attention throughout. ``hsa_window="ultra"`` uses the ultra phase
    of ``variation`` even when ``schedule="constant"``, so dropping SV keeps the attention
    schedule; ``"steps"`` uses the HSA config's own bounds.
    """

    dst: DSTConfig = field(default_factory=lambda: DSTConfig(grow_mix_ratio=3.0))
    variation: VariationConfig = field(default_factory=VariationConfig)
    schedule: str = "variation"
    level: float = 0.9
    hsa: HSAConfig | None = field(default_factory=HSAConfig)
    hsa_window: str = "ultra"
    target_reduction: float | None = 4.0
    solve_knob: str = "auto"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"method.sparsity.schedule={self.schedule!r} is unknown; allowed: {SCHEDULES}"
            )
        if not 0.0 <= self.level < 1.0:
            raise ConfigError(f"method.sparsity.level={self.level} must be in [0, 1)")
        if self.hsa_window not in WINDOWS:
            raise ConfigError(
                f"method.hsa.window={self.hsa_window!r} is unknown; allowed: {WINDOWS}"
            )
        if self.target_reduction is not None and not self.target_reduction >= 1.0:
            raise ConfigError(
                f"method.target_reduction={self.target_reduction} must be >= 1 (or null)"
            )
        if self.solve_knob not in SOLVE_KNOBS:
            raise ConfigError(
                f"method.solve_knob={self.solve_knob!r} is unknown; allowed: {SOLVE_KNOBS}"
            )
        constant_knob = self.solve_knob in ("auto", "level")
        if self.schedule == "constant" and not constant_knob:
            raise ConfigError(
                f"method.solve_knob={self.solve_knob} needs method.sparsity.schedule=variation; "
                "a constant schedule solves its level"
            )
        if self.schedule == "variation" and self.solve_knob == "level":
            raise ConfigError("method.solve_knob=level needs method.sparsity.schedule=constant")

    @property
    def knob(self) -> str:
        """The knob ``solve`` moves."""
        if self.solve_knob != "auto":
            return self.solve_knob
        return "level" if self.schedule == "constant" else "s_max"

    def knob_value(self) -> float:
        return self.level if self.knob == "level" else getattr(self.variation, self.knob)

    def with_knob(self, value: float) -> MSTConfig:
        if self.knob == "level":
            return dataclasses.replace(self, level=value)
        variation = dataclasses.replace(self.variation, **{self.knob: value})
        return dataclasses.replace(self, variation=variation)


def _constant(sparsity: float) -> Callable[[int], float]:
    def target(step: int) -> float:
        return sparsity

    return target


def with_context(cfg: MSTConfig, seq_len: int) -> MSTConfig:
    """A stride written relative to the context (``hsa.stride_frac``) made absolute for a run
    of context ``seq_len``, so one setting serves every scale."""
    if cfg.hsa is None or cfg.hsa.stride_frac is None:
        return cfg
    stride = max(1, round(cfg.hsa.stride_frac * seq_len))
    hsa = dataclasses.replace(cfg.hsa, stride=stride, stride_frac=None)
    return dataclasses.replace(cfg, hsa=hsa)


class MSTPlan:
    """Every function of the step a run of ``cfg`` follows, for a model of ``shape``.

    ``convention`` is the run's ``flops.convention``: it fixes how a sparse attention pattern's
    density is counted (``hsa.flop_attn_density``).
    """

    def __init__(
        self,
        cfg: MSTConfig,
        shape: ModelShape,
        total_steps: int,
        convention: str = DEFAULT_CONVENTION,
    ) -> None:
        cfg = with_context(cfg, shape.seq_len)
        self.cfg, self.shape, self.total_steps = cfg, shape, total_steps
        self.convention = convention
        self.variation = SparsityVariation(cfg.variation, total_steps)
        self.target_fn = self.variation if cfg.schedule == "variation" else _constant(cfg.level)
        targets = model_targets(shape, cfg.dst.sparsify_lm_head)
        self.timeline = DSTTimeline(targets, cfg.dst, self.target_fn, total_steps)
        self.window = (0, 0)
        self.attn_density = 1.0
        if cfg.hsa is not None:
            self.window = (
                self.variation.ultra_window()
                if cfg.hsa_window == "ultra"
                else step_window(cfg.hsa, total_steps)
            )
            per_layer = [
                flop_attn_density(p, shape.seq_len, cfg.hsa.stride, convention, cfg.hsa.flop_basis)
                for p in layer_patterns(cfg.hsa, shape.n_layer)
            ]
            self.attn_density = sum(per_layer) / len(per_layer)

    def hsa_on(self, step: int) -> bool:
        """Sparse attention in this step's training forward (the HSA hook's ``active``)."""
        return self.window[0] <= step < self.window[1]

    def phase(self, step: int) -> str:
        """warmup / ultra / restoration, or ``constant`` for a constant schedule."""
        return self.variation.phase_at(step) if self.cfg.schedule == "variation" else "constant"

    def flop_factors(self, step: int) -> dict[str, Any]:
        """What the hooks report to the loop at this step (keys of train_flops_per_token)."""
        factors = self.timeline.flop_factors(step)
        if self.hsa_on(step):
            factors["attn_density"] = self.attn_density
        return factors

    def segments(self) -> list[tuple[int, int]]:
        """[start, end) runs of steps with equal FLOPs: masks change only after a multiple of
        ΔT (which itself pays the dense gradient), attention only at the window's ends."""
        cuts = {0, self.total_steps, *self.window}
        for k in range(0, self.total_steps, self.cfg.dst.interval):
            cuts.update((k, k + 1))
        edges = sorted(c for c in cuts if 0 <= c <= self.total_steps)
        return list(zip(edges[:-1], edges[1:], strict=True))

    def ledger(self) -> dict[str, float]:
        """Whole-run sums of per-token training FLOPs (one token of every step): ``dense``,
        ``ours``, ``dst_overhead`` and ``reduction`` = dense / ours."""
        dense_step = train_flops_per_token(self.shape, convention=self.convention)["total"]
        ours = overhead = 0.0
        for start, end in self.segments():
            f = train_flops_per_token(
                self.shape, convention=self.convention, **self.flop_factors(start)
            )
            ours += (end - start) * f["total"]
            overhead += (end - start) * f.get("dst_overhead", 0.0)
        dense = dense_step * self.total_steps
        return {"dense": dense, "ours": ours, "dst_overhead": overhead, "reduction": dense / ours}

    def basis_reductions(self) -> dict[str, float]:
        """This run's whole-run reduction with HSA counted on each basis (hsa.py docstring):
        ``full_t2`` (patterns over T², mst.md §4 as written) and ``causal_pairs`` (patterns
        over the causal pairs of the dense attention they replace). Equal without HSA."""
        out = {}
        for key, basis in BASES.items():
            cfg = self.cfg
            if cfg.hsa is not None:
                cfg = dataclasses.replace(cfg, hsa=dataclasses.replace(cfg.hsa, flop_basis=basis))
            plan = MSTPlan(cfg, self.shape, self.total_steps, self.convention)
            out[key] = plan.ledger()["reduction"]
        return out


def _knob_range(cfg: MSTConfig) -> tuple[float, float]:
    v = cfg.variation
    if cfg.knob == "s_max":
        return max(v.s_start, v.s_end), 0.999
    if cfg.knob == "ultra_frac":
        return 0.0, 1.0 - v.warmup_frac
    return 0.0, 0.999


def solve(
    cfg: MSTConfig, shape: ModelShape, total_steps: int, convention: str = DEFAULT_CONVENTION
) -> tuple[MSTConfig, float]:
    """``cfg`` with its knob set so the ledger's reduction is at least ``target_reduction``
    and within ``SOLVE_TOL`` above it (``cfg`` unchanged when that is null), and the reduction.

    The reduction grows with every knob; bisection keeps the smallest knob that reaches the
    target (mask counts are integers, so the reduction moves in small steps).
    """
    if cfg.target_reduction is None:
        return cfg, MSTPlan(cfg, shape, total_steps, convention).ledger()["reduction"]
    target = cfg.target_reduction
    lo, hi = _knob_range(cfg)

    def at(value: float) -> tuple[float, MSTConfig, float]:
        solved = cfg.with_knob(value)
        return value, solved, MSTPlan(solved, shape, total_steps, convention).ledger()["reduction"]

    low, high = at(lo), at(hi)
    if high[2] < target:
        raise ConfigError(
            f"method.target_reduction={target} is out of reach by {cfg.knob}: "
            f"{low[2]:.3f}x at {cfg.knob}={lo} to {high[2]:.3f}x at {cfg.knob}={hi:g}"
        )
    best = low if low[2] >= target else high  # the budget is a floor: never above it in FLOPs
    for _ in range(60):
        if best[2] - target <= SOLVE_TOL:
            break
        mid = at((lo + hi) / 2)
        if mid[2] < target:
            lo = mid[0]
        else:
            hi, best = mid[0], mid
    return best[1], best[2]


class MSTSchedule(TrainHook):
    """Logs the phase, whether sparse attention ran, and the solved knob; holds no state."""

    name = "mst"

    def __init__(self, plan: MSTPlan, planned_reduction: float) -> None:
        self.plan = plan
        cfg = plan.cfg
        self.fixed = {
            "mst_schedule": cfg.schedule,
            "mst_knob": cfg.knob,
            "mst_knob_value": cfg.knob_value(),
            "mst_peak_sparsity": cfg.variation.s_max if cfg.schedule == "variation" else cfg.level,
            "mst_planned_reduction": planned_reduction,
        }

    def log_fields(self, step: int) -> dict[str, Any]:
        return {"mst_phase": self.plan.phase(step), **self.fixed}


def shape_of(model: GPT, seq_len: int) -> ModelShape:
    c = model.config
    return ModelShape(c.n_layer, c.d_model, c.n_head, c.d_ff, seq_len, c.vocab_size)


def build_hooks(
    cfg: MSTConfig,
    model: GPT,
    total_steps: int,
    seq_len: int,
    convention: str = DEFAULT_CONVENTION,
) -> tuple[MSTPlan, list[TrainHook]]:
    """Solve ``cfg`` for this model and run, then the hooks that train it (in this order:
    masks, attention, schedule log)."""
    shape = shape_of(model, seq_len)
    cfg = with_context(cfg, seq_len)
    solved, reduction = solve(cfg, shape, total_steps, convention)
    plan = MSTPlan(solved, shape, total_steps, convention)
    hooks: list[TrainHook] = [
        DynamicSparsity.from_config(model, solved.dst, plan.target_fn, total_steps)
    ]
    if solved.hsa is not None:
        hsa = dataclasses.replace(
            solved.hsa,
            seq_len=seq_len,
            flops_convention=convention,
            start_step=plan.window[0],
            end_step=plan.window[1],
        )
        hooks.append(HSAHook(hsa, shape.n_layer, total_steps, active=plan.hsa_on))
    hooks.append(MSTSchedule(plan, reduction))
    return plan, hooks


# ---------------------------------------------------------------- CLI

CLI_KEYS = ("model", "seq_len", "vocab_size", "steps", "interval", "target_reduction")


def ledger_report(shape: ModelShape, total_steps: int, cfg: MSTConfig) -> dict[str, Any]:
    """The schedule as written under every accounting of mst.md §4, and the solved knob."""
    fixed = dataclasses.replace(cfg, target_reduction=None)
    density = {
        c: MSTPlan(fixed, shape, total_steps, c).attn_density
        for c in ("megatron_full_attn", "causal_half_attn")
    }
    headline_plan = MSTPlan(fixed, shape, total_steps, DEFAULT_CONVENTION)
    headline = headline_plan.ledger()
    report: dict[str, Any] = {
        "shape": dataclasses.asdict(shape),
        "steps": total_steps,
        "interval": cfg.dst.interval,
        "variation": dataclasses.asdict(cfg.variation),
        "hsa_attn_density": density,
        "headline_convention": f"{DEFAULT_CONVENTION}/with_overhead/with_head",
        "reduction": headline["reduction"],
        "dst_overhead_share": headline["dst_overhead"] / headline["ours"],
        "attention_bases": attention_bases(headline_plan),
    }
    if cfg.schedule == "variation" and cfg.hsa_window == "ultra":
        report["reductions"] = ledger_conventions(
            shape, total_steps, cfg.variation, cfg.dst, ultra_attn_density=density
        )
    if cfg.target_reduction is not None:
        solved, reached = solve(cfg, shape, total_steps, DEFAULT_CONVENTION)
        report["solved"] = {"knob": cfg.knob, "value": solved.knob_value(), "reduction": reached}
    return report


def attention_bases(plan: MSTPlan) -> dict[str, Any]:
    """The plan's reduction with HSA counted on both bases, and which one its target means."""
    basis = plan.cfg.hsa.flop_basis if plan.cfg.hsa is not None else "full"
    target = next(k for k, b in BASES.items() if b == basis)
    return {
        **plan.basis_reductions(),
        "target_basis": target,
        "note": (
            f"method.target_reduction is met under flops.convention={plan.convention} with "
            f"method.hsa.flop_basis={basis} ({target}). full_t2: dense attention counts all "
            "T² scores, a sparse pattern its allowed (causal) pairs over T² (mst.md §4 as "
            "written); causal_pairs: a pattern counts its share of the causal pairs of the "
            "dense attention it replaces"
        ),
    }


def _int_arg(args: dict[str, str], key: str, default: int | None) -> int | None:
    if key not in args:
        return default
    try:
        value = int(args[key])
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{key}={args[key]!r} must be a positive integer")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args: dict[str, str] = {}
        for item in sys.argv[1:] if argv is None else argv:
            key, sep, value = item.partition("=")
            if not sep or key not in CLI_KEYS:
                raise ConfigError(f"{key}: unknown argument; allowed: {', '.join(CLI_KEYS)}")
            args[key] = value
        model = load_model_config(args.get("model", "gpt2_small"))
        if "vocab_size" in args:
            model["vocab_size"] = _int_arg(args, "vocab_size", None)
        shape = shape_from_model_config(model, seq_len=_int_arg(args, "seq_len", 1024))
        cfg = MSTConfig(target_reduction=float(args.get("target_reduction", 4.0)))
        interval = _int_arg(args, "interval", cfg.dst.interval)
        cfg = dataclasses.replace(cfg, dst=dataclasses.replace(cfg.dst, interval=interval))
        report = ledger_report(shape, _int_arg(args, "steps", 600_000), cfg)
    except (SparselmError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

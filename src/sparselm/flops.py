"""Analytic FLOP counter shared by every method (methods README §6, spdf.md §6).

Per token, forward pass, multiply-add = 2 FLOPs:

- block linears ``2·n_in·n_out·δ`` per layer (Q, K, V, attn_out, mlp_in, mlp_out);
- attention scores ``4·T·d·a`` per layer (QK^T and A·V over the full T×T matrix);
- LM head ``2·d·V·δ_head``.

Training = 3 × forward. The default convention, ``megatron_full_attn``, reproduces SPDF's
2.49× for GPT-3 XL at 75 % sparsity; the others exist so figures can show the spread.
Run ``python -m sparselm.flops model=gpt3_xl sparsity.level=0.75`` for a JSON summary, and
``python -m sparselm.flops model=gpt2_small raptr.stages=[6,8,10,12]`` for a RaPTr schedule's
expected FLOP ratios (equal stages, vs the full dense model).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

from sparselm.errors import CheckpointError, ConfigError, SparselmError
from sparselm.schedules import Stage, equal_stages

CONVENTIONS: tuple[str, ...] = ("megatron_full_attn", "causal_half_attn", "chinchilla", "no_attn")
DEFAULT_CONVENTION = "megatron_full_attn"
LINEAR_KINDS: tuple[str, ...] = ("q", "k", "v", "attn_out", "mlp_in", "mlp_out")


@dataclass(frozen=True)
class ModelShape:
    """The dimensions the FLOP count depends on; ``seq_len`` is the context T."""

    n_layer: int
    d_model: int
    n_head: int
    d_ff: int
    seq_len: int
    vocab_size: int
    # weights per layer of each linear kind when they are not GPT's (d, d, d, d, d·f, f·d): a
    # Hugging Face model's, read from its block linears (a gated MLP has two mlp_in matrices)
    linear_params: tuple[tuple[str, int], ...] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "linear_params":
                continue
            value = getattr(self, f.name)
            # bool is an int subclass; a True layer count is a config mistake, not 1
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{f.name}: must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise ConfigError(f"n_head: must divide d_model={self.d_model}, got {self.n_head}")

    def weights_per_layer(self) -> dict[str, int]:
        """Weights of each linear kind in one layer (the forward does 2 FLOPs per weight)."""
        if self.linear_params is not None:
            return dict(self.linear_params)
        return {kind: n_in * n_out for kind, (n_in, n_out) in self.linear_dims().items()}

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(n_in, n_out) of each per-layer linear kind."""
        d, f = self.d_model, self.d_ff
        return {
            "q": (d, d),
            "k": (d, d),
            "v": (d, d),
            "attn_out": (d, d),
            "mlp_in": (d, f),
            "mlp_out": (f, d),
        }


def shape_from_model_config(cfg: Mapping[str, Any], seq_len: int | None = None) -> ModelShape:
    """Build a ModelShape from a model config (conf/model/*.yaml keys).

    seq_len comes from the argument, else a ``seq_len`` key, else ``block_size``.
    """

    def get(key: str) -> Any:
        if key not in cfg:
            raise ConfigError(f"model.{key}: missing from the model config")
        value = cfg[key]
        if isinstance(value, str):
            # an unresolved ${...} interpolation lands here as a string
            raise ConfigError(f"model.{key}: must be an integer, got {value!r}")
        return value

    if seq_len is None:
        seq_len = cfg["seq_len"] if "seq_len" in cfg else get("block_size")
    return ModelShape(
        n_layer=get("n_layer"),
        d_model=get("d_model"),
        n_head=get("n_head"),
        d_ff=get("d_ff"),
        seq_len=seq_len,
        vocab_size=get("vocab_size"),
    )


def _check_fraction(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}: must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ConfigError(
            f"convention: must be one of {', '.join(CONVENTIONS)}, got {convention!r}"
        )
    return convention


def _check_sparsity(sparsity: float) -> float:
    ok = isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool)
    if not ok or not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity.level: must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _linear_flops(shape: ModelShape, density: Mapping[str, float] | None) -> float:
    """Per-layer block-linear forward FLOPs at the given per-kind weight density."""
    density = dict(density or {})
    unknown = sorted(set(density) - set(LINEAR_KINDS))
    if unknown:
        raise ConfigError(
            f"density: unknown linear kind {unknown[0]!r}, allowed: {', '.join(LINEAR_KINDS)}"
        )
    total = 0.0
    for kind, weights in shape.weights_per_layer().items():
        delta = _check_fraction(f"density.{kind}", density.get(kind, 1.0))
        total += 2.0 * weights * delta
    return total


def forward_flops_per_token(
    shape: ModelShape,
    *,
    density: Mapping[str, float] | None = None,
    head_density: float = 1.0,
    executed_block_frac: float = 1.0,
    attn_density: float = 1.0,
    convention: str = DEFAULT_CONVENTION,
) -> dict[str, float]:
    """Forward FLOPs per token by component, plus ``total``.

    ``linear``, ``attention`` and ``head`` are always present (``attention`` is 0 under
    ``no_attn``); ``chinchilla`` adds ``embedding`` (one-hot matmul, dense) and ``softmax``.
    Block terms (linears, attention, softmax) scale with ``executed_block_frac``.
    """
    _check_convention(convention)
    head_density = _check_fraction("head_density", head_density)
    block_frac = _check_fraction("executed_block_frac", executed_block_frac)
    attn_density = _check_fraction("attn_density", attn_density)
    layers = shape.n_layer * block_frac
    t, d, v = shape.seq_len, shape.d_model, shape.vocab_size

    # QK^T and A·V are each 2·T·d per token over the full T×T score matrix
    attn_per_layer = {
        "megatron_full_attn": 4.0 * t * d,
        "causal_half_attn": 2.0 * t * d,
        "chinchilla": 4.0 * t * d,
        "no_attn": 0.0,
    }[convention]
    out = {
        "linear": layers * _linear_flops(shape, density),
        "attention": layers * attn_per_layer * attn_density,
        "head": 2.0 * d * v * head_density,
    }
    if convention == "chinchilla":
        # Chinchilla appendix F: embedding as a one-hot matmul, 3 FLOPs per softmax score
        out["embedding"] = 2.0 * d * v
        out["softmax"] = layers * 3.0 * shape.n_head * t * attn_density
    out["total"] = sum(out.values())
    return out


def train_flops_per_token(
    shape: ModelShape,
    *,
    density: Mapping[str, float] | None = None,
    head_density: float = 1.0,
    executed_block_frac: float = 1.0,
    attn_density: float = 1.0,
    convention: str = DEFAULT_CONVENTION,
    dense_weight_grad: bool = False,
    teacher_forwards: float = 0.0,
) -> dict[str, float]:
    """Training FLOPs per token: 3 × forward (forward, activation grad, weight grad).

    ``dense_weight_grad`` marks a dynamic-sparse-training update step (mst.md §4): the
    weight-gradient matmul of every sparse linear runs at full density to score growth, so
    ``dst_overhead`` (see ``dense_weight_grad_overhead``) is added to ``total``.
    ``teacher_forwards``: dense forwards of a frozen teacher of the same shape per token
    (distillation, squarehead.md §6), added to ``total`` as ``teacher``.
    """
    fwd = forward_flops_per_token(
        shape,
        density=density,
        head_density=head_density,
        executed_block_frac=executed_block_frac,
        attn_density=attn_density,
        convention=convention,
    )
    out = {key: 3.0 * value for key, value in fwd.items()}
    if dense_weight_grad:
        out["dst_overhead"] = dense_weight_grad_overhead(
            shape,
            density=density,
            head_density=head_density,
            executed_block_frac=executed_block_frac,
        )
        out["total"] += out["dst_overhead"]
    if teacher_forwards:
        out["teacher"] = (
            teacher_forwards * forward_flops_per_token(shape, convention=convention)["total"]
        )
        out["total"] += out["teacher"]
    return out


def dense_weight_grad_overhead(
    shape: ModelShape,
    *,
    density: Mapping[str, float] | None = None,
    head_density: float = 1.0,
    executed_block_frac: float = 1.0,
) -> float:
    """Extra FLOPs per token of a dense weight gradient on top of the sparse one.

    ``Σ 2·n_in·n_out·(1 − δ)`` over the block linears (scaled by ``executed_block_frac``)
    and the head: what RigL-style growth pays on a mask-update step. Zero for dense weights.
    """
    block_frac = _check_fraction("executed_block_frac", executed_block_frac)
    head_density = _check_fraction("head_density", head_density)
    per_layer = _linear_flops(shape, None) - _linear_flops(shape, density)
    head = 2.0 * shape.d_model * shape.vocab_size * (1.0 - head_density)
    return shape.n_layer * block_frac * per_layer + head


def reduction(shape: ModelShape, sparsity: float, convention: str = DEFAULT_CONVENTION) -> float:
    """Dense / sparse training FLOPs with uniform sparsity on every block linear."""
    delta = 1.0 - _check_sparsity(sparsity)
    dense = train_flops_per_token(shape, convention=convention)["total"]
    sparse = train_flops_per_token(
        shape, density=dict.fromkeys(LINEAR_KINDS, delta), convention=convention
    )["total"]
    return dense / sparse


def stage_flop_ratios(
    shape: ModelShape,
    stages: Sequence[Stage],
    convention: str = DEFAULT_CONVENTION,
    key: str = "stages",
) -> dict[str, float]:
    """Expected training FLOPs of a stage schedule (RaPTr, stacking) over the full model's.

    ``block_only`` counts the transformer blocks alone (``Σ f_s·ℓ_s/L``, raptr.md §5);
    ``all_inclusive`` adds the head (and, under chinchilla, the embedding), paid every step.
    ``stage.path_len`` is the expected number of executed blocks in that stage.
    """
    if not stages or abs(sum(s.fraction for s in stages) - 1.0) > 1e-6:
        raise ConfigError(f"{key}: fractions must sum to 1, got {[s.fraction for s in stages]}")
    full = train_flops_per_token(shape, convention=convention)["total"]
    block_only = all_inclusive = 0.0
    for s in stages:
        if s.fraction < 0 or not 0 <= s.path_len <= shape.n_layer:
            raise ConfigError(
                f"{key}: path length {s.path_len} must lie in [0, n_layer={shape.n_layer}]"
            )
        frac = s.path_len / shape.n_layer
        block_only += s.fraction * frac
        step = train_flops_per_token(shape, executed_block_frac=frac, convention=convention)
        all_inclusive += s.fraction * step["total"] / full
    return {"block_only": block_only, "all_inclusive": all_inclusive}


class FlopLedger:
    """Cumulative training FLOPs, logged next to the loss so figures can use a FLOP x-axis."""

    def __init__(self) -> None:
        self.total: float = 0.0
        self.steps: int = 0
        self.tokens: int = 0

    def add(self, tokens: int, flops_per_token: float) -> float:
        """Record one step; returns the cumulative total."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ConfigError(f"tokens: must be a non-negative integer, got {tokens!r}")
        ok = isinstance(flops_per_token, (int, float)) and not isinstance(flops_per_token, bool)
        if not ok or not math.isfinite(flops_per_token) or flops_per_token < 0:
            raise ConfigError(
                f"flops_per_token: must be a finite number >= 0, got {flops_per_token!r}"
            )
        self.total += tokens * float(flops_per_token)
        self.steps += 1
        self.tokens += tokens
        return self.total

    def state_dict(self) -> dict[str, float | int]:
        return {"total": self.total, "steps": self.steps, "tokens": self.tokens}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, kind in (("total", (int, float)), ("steps", int), ("tokens", int)):
            value = state.get(key)
            if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
                raise CheckpointError(
                    f"flop_ledger.{key}: must be a non-negative number, got {value!r}"
                )
        self.total = float(state["total"])
        self.steps = int(state["steps"])
        self.tokens = int(state["tokens"])


# ---------------------------------------------------------------- CLI

CLI_KEYS = ("model", "sparsity.level", "seq_len", "convention", "tokens", "raptr.stages")


def conf_dir() -> Path:
    """The repo's conf/ directory; SPARSELM_CONF_DIR overrides it."""
    env = os.environ.get("SPARSELM_CONF_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "conf"


# the one interpolation model configs use: the vocabulary of the tokenizer they train with
VOCAB_FROM_TOKENIZER = "${tokenizer.vocab_size}"


def load_model_config(name: str, conf: Path | None = None) -> dict[str, Any]:
    """Load conf/model/<name>.yaml, resolving ${tokenizer.vocab_size} from tokenizer/bpe.yaml.

    Plain YAML rather than OmegaConf: the FLOP counter and the GPU benchmarks run where only
    torch and PyYAML are installed.
    """
    import yaml  # imported here so the counter itself stays dependency-free

    conf = conf or conf_dir()
    available = sorted(p.stem for p in (conf / "model").glob("*.yaml"))
    if name not in available:
        raise ConfigError(f"model: unknown {name!r}, available: {', '.join(available) or 'none'}")
    try:
        model = yaml.safe_load((conf / "model" / f"{name}.yaml").read_text())
        if not isinstance(model, dict):
            raise ValueError("not a mapping of model keys")
        if model.get("vocab_size") == VOCAB_FROM_TOKENIZER:
            tokenizer = yaml.safe_load((conf / "tokenizer" / "bpe.yaml").read_text())
            model["vocab_size"] = tokenizer["vocab_size"]
        left = [k for k, v in model.items() if isinstance(v, str) and "${" in v]
        if left:
            raise ValueError(f"unresolved interpolation in {', '.join(left)}")
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"model: cannot load {name!r} from {conf}: {first_line}") from err
    return cast(dict[str, Any], model)


def _parse_args(argv: Sequence[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in CLI_KEYS:
            raise ConfigError(f"{key}: unknown argument, allowed: {'=..., '.join(CLI_KEYS)}=...")
        args[key] = value
    # a RaPTr schedule alone is a full question: its ratios are vs the dense full-depth model
    required = ("model",) if "raptr.stages" in args else ("model", "sparsity.level")
    for key in required:
        if key not in args:
            raise ConfigError(
                f"{key}: required (usage: model=<name> sparsity.level=<s> | raptr.stages=[...])"
            )
    return args


def _parse_list(key: str, text: str) -> list[float]:
    items = text.strip().removeprefix("[").removesuffix("]").split(",")
    if not text.strip() or not all(item.strip() for item in items):
        raise ConfigError(f"{key}: must be a list of numbers like [6,8,10,12], got {text!r}")
    return [_parse_number(key, item.strip(), False) for item in items]


def _parse_number(key: str, text: str, integer: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (integer and (value != int(value) or value <= 0)):
        kind = "a positive integer" if integer else "a number"
        raise ConfigError(f"{key}: must be {kind}, got {text!r}")
    return int(value) if integer else value


def summarize(args: Mapping[str, str]) -> dict[str, Any]:
    """The CLI's JSON report for parsed ``key=value`` arguments."""
    convention = _check_convention(args.get("convention", DEFAULT_CONVENTION))
    sparsity = _check_sparsity(
        _parse_number("sparsity.level", args.get("sparsity.level", "0"), False)
    )
    seq_len = int(_parse_number("seq_len", args["seq_len"], True)) if "seq_len" in args else None
    shape = shape_from_model_config(load_model_config(args["model"]), seq_len=seq_len)
    density = dict.fromkeys(LINEAR_KINDS, 1.0 - sparsity)
    dense = train_flops_per_token(shape, convention=convention)["total"]
    sparse = train_flops_per_token(shape, density=density, convention=convention)["total"]
    report: dict[str, Any] = {
        "model": args["model"],
        "sparsity": sparsity,
        "seq_len": shape.seq_len,
        "vocab_size": shape.vocab_size,
        "convention": convention,
        "dense_train_flops_per_token": dense,
        "sparse_train_flops_per_token": sparse,
        "reduction": dense / sparse,
        "reductions": {c: reduction(shape, sparsity, convention=c) for c in CONVENTIONS},
    }
    if "raptr.stages" in args:
        stages = equal_stages(_parse_list("raptr.stages", args["raptr.stages"]))
        ratios = stage_flop_ratios(shape, stages, convention=convention, key="raptr.stages")
        report["raptr_stages"] = [s.path_len for s in stages]
        report["raptr_block_only_ratio"] = ratios["block_only"]
        report["raptr_all_inclusive_ratio"] = ratios["all_inclusive"]
    if "tokens" in args:
        tokens = int(_parse_number("tokens", args["tokens"], True))
        report["tokens"] = tokens
        report["dense_train_flops"] = dense * tokens
        report["sparse_train_flops"] = sparse * tokens
    return report


def main(argv: Sequence[str] | None = None) -> int:
    try:
        report = summarize(_parse_args(sys.argv[1:] if argv is None else argv))
    except SparselmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

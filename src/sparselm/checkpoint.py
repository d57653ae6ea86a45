"""One checkpoint format: safetensors for every tensor, JSON for the rest, no pickle.

Layout of ``<run>/checkpoints/step_<N>/``::

    model.safetensors       weights (the tied LM head is stored once, as wte.weight)
    optimizer.safetensors   per-parameter optimizer state, keyed by parameter name
    hooks.safetensors       method state (masks, ...), keyed "<hook>/<name>"
    rng.safetensors         torch RNG states
    state.json              step, optimizer hyper-parameters, ledger, model config
    config.yaml             the resolved run config

A checkpoint is written into a temporary folder, then renamed into place; ``latest`` names the
newest complete one. A crash mid-write leaves only a temporary folder that is never read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparselm.errors import CheckpointError
from sparselm.optim import parameter_names

TIED_KEYS = ("lm_head.weight",)


@dataclass
class TrainingState:
    """What a run needs besides tensors to continue exactly where it stopped."""

    step: int = 0  # number of optimizer steps completed
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def save_checkpoint(
    run_dir: Path,
    state: TrainingState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    hook_states: dict[str, dict],
    config_yaml: str,
    keep_last: int = 2,
) -> Path:
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{state.step:08d}"
    tmp = root / f".tmp_step_{state.step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(model_tensors(model), tmp / "model.safetensors")
    if optimizer is not None:
        tensors, groups = _optimizer_tensors(model, optimizer)
        save_file(tensors, tmp / "optimizer.safetensors")
    else:
        groups = []
    flat_hooks = {
        f"{h}/{k}": v.detach().cpu().contiguous()
        for h, sd in hook_states.items()
        for k, v in sd.items()
    }
    save_file(flat_hooks, tmp / "hooks.safetensors")
    save_file(_rng_tensors(), tmp / "rng.safetensors")
    meta = {
        "step": state.step,
        "extra": state.extra,
        "param_groups": groups,
        "model_config": _model_config(model),
    }
    (tmp / "state.json").write_text(json.dumps(meta, indent=2))
    (tmp / "config.yaml").write_text(config_yaml)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomic(root / "latest", final.name)
    _prune(root, keep_last)
    return final


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tied tensor once, under its first name (``wte.weight`` for the
    LM head; the same rule covers wrapped Hugging Face models, whose names differ)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for k, v in model.state_dict().items():
        alias = (v.device, v.data_ptr(), tuple(v.shape), v.stride())
        if k in TIED_KEYS or (v.numel() and alias in seen):
            continue
        seen.add(alias)
        out[k] = v.detach().cpu().contiguous()
    return out


def latest_checkpoint(path: Path) -> Path | None:
    """A run folder's newest complete checkpoint, or the checkpoint folder itself."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    pointer = path / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    ckpt = path / "checkpoints" / pointer.read_text().strip()
    return ckpt if (ckpt / "state.json").is_file() else None


def load_model_weights(ckpt: Path, model: nn.Module) -> None:
    """Load weights into ``model``; a tensor of another shape is a one-line error."""
    file = Path(ckpt) / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; expected a sparselm checkpoint folder")
    saved = load_file(file)
    own = model_tensors(model)
    missing = sorted(set(own) - set(saved))
    if missing:
        raise CheckpointError(f"{file}: lacks tensor {missing[0]!r}; it was made for another model")
    for k, v in own.items():
        if saved[k].shape != v.shape:
            raise CheckpointError(
                f"{file}: tensor {k!r} has shape {tuple(saved[k].shape)} but this model needs "
                f"{tuple(v.shape)}; check model.* against the checkpoint's config.yaml"
            )
    model.load_state_dict({k: saved[k] for k in own}, strict=False)


def load_checkpoint(
    ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, hooks: dict[str, Any]
) -> TrainingState:
    """Restore weights, optimizer, hook state and RNG; returns the step to continue from."""
    ckpt = Path(ckpt)
    meta = json.loads((ckpt / "state.json").read_text())
    load_model_weights(ckpt, model)
    if optimizer is not None:
        _load_optimizer(ckpt / "optimizer.safetensors", model, optimizer, meta["param_groups"])
    flat = load_file(ckpt / "hooks.safetensors")
    for name, hook in hooks.items():
        prefix = f"{name}/"
        hook.load_state_dict({k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)})
    _restore_rng(load_file(ckpt / "rng.safetensors"))
    return TrainingState(step=int(meta["step"]), extra=meta.get("extra", {}))


def load_hook_tensors(ckpt: Path, hook_name: str) -> dict[str, torch.Tensor]:
    flat = load_file(Path(ckpt) / "hooks.safetensors")
    prefix = f"{hook_name}/"
    return {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}


def _optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer):
    names = parameter_names(model)
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    for group in optimizer.param_groups:
        groups.append(
            {k: v for k, v in group.items() if k != "params"}
            | {"params": [names[id(p)] for p in group["params"]]}
        )
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"{names[id(p)]}/{key}"] = t.detach().cpu().contiguous()
    return tensors, groups


def _load_optimizer(
    file: Path, model: nn.Module, optimizer: torch.optim.Optimizer, groups: list[dict]
) -> None:
    flat = load_file(file)
    by_name = dict(model.named_parameters())
    state: dict[int, dict[str, torch.Tensor]] = {}
    index = 0
    param_groups = []
    for group, saved in zip(optimizer.param_groups, groups, strict=True):
        ids = []
        for p in group["params"]:
            name = saved["params"][len(ids)]
            if by_name[name] is not p:
                raise CheckpointError(f"{file}: parameter order differs at {name!r}")
            entry = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(f"{name}/")}
            if entry:
                state[index] = entry
            ids.append(index)
            index += 1
        param_groups.append({k: v for k, v in saved.items() if k != "params"} | {"params": ids})
    for g in param_groups:  # JSON turned tuples into lists
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _model_config(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)

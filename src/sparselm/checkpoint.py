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

Tensors are always full (unsharded), so a checkpoint loads on any number of ranks: an FSDP
model gathers them on rank 0 to save and takes its shards from the full tensors on load.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sparselm.distributed import is_sharded
from sparselm.errors import CheckpointError
from sparselm.optim import parameter_names

TIED_KEYS = ("lm_head.weight",)
# Tensors a weights file may hold that the model need not have: the tied LM head (stored once,
# as wte.weight, but older writers kept both names).
OPTIONAL_KEYS = TIED_KEYS


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
    write: bool = True,
) -> Path:
    """Write the checkpoint folder; ``write=False`` (ranks other than 0) writes nothing but
    still takes part in gathering the shards of an FSDP model."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{state.step:08d}"
    if not write and not is_sharded(model):
        return final
    weights = model_tensors(model)  # FSDP: a collective, so every rank gets here
    tensors, groups = _optimizer_tensors(model, optimizer) if optimizer is not None else ({}, [])
    if not write:
        return final
    tmp = root / f".tmp_step_{state.step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, tmp / "model.safetensors")
    if optimizer is not None:
        save_file(tensors, tmp / "optimizer.safetensors")
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
    _prune(root, keep_last, final)
    return final


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tied tensor once, under its first name (``wte.weight`` for the
    LM head; the same rule covers wrapped Hugging Face models, whose names differ).

    For an FSDP model every rank must call this; rank 0 gets the full tensors, the others {}.
    """
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(model, options=_full_options())
    else:
        state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    for k, v in state.items():
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
    saved = read_tensors(file)
    own = _own_shapes(model)
    missing = sorted(set(own) - set(saved))
    if missing:
        raise CheckpointError(f"{file}: lacks tensor {missing[0]!r}; it was made for another model")
    extra = sorted(set(saved) - set(own) - set(OPTIONAL_KEYS))
    if extra:
        raise CheckpointError(
            f"{file}: holds tensor {extra[0]!r}, which this model does not have; "
            "it was made for another model"
        )
    for k, shape in own.items():
        if saved[k].shape != shape:
            raise CheckpointError(
                f"{file}: tensor {k!r} has shape {tuple(saved[k].shape)} but this model needs "
                f"{tuple(shape)}; check model.* against the checkpoint's config.yaml"
            )
        if saved[k].is_floating_point() and not bool(torch.isfinite(saved[k]).all()):
            raise CheckpointError(f"{file}: tensor {k!r} holds NaN or inf values")
    if is_sharded(model):  # every rank read the full tensors; each keeps its own shard
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        options = _full_options(cpu_offload=False)
        set_model_state_dict(model, {k: saved[k] for k in own}, options=options)
        return
    model.load_state_dict({k: saved[k] for k in own}, strict=False)


def _own_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Name -> (global) shape of every tensor ``model_tensors`` would save."""
    if not is_sharded(model):
        return {k: v.shape for k, v in model_tensors(model).items()}
    seen: set[int] = set()
    out = {}
    for k, v in model.state_dict().items():  # DTensors report their global shape
        if k in TIED_KEYS or id(v) in seen:
            continue
        seen.add(id(v))
        out[k] = v.shape
    return out


def _full_options(cpu_offload: bool = True, strict: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload, strict=strict)


def load_checkpoint(
    ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, hooks: dict[str, Any]
) -> TrainingState:
    """Restore weights, optimizer, hook state and RNG; returns the step to continue from."""
    ckpt = Path(ckpt)
    meta = read_state(ckpt)
    load_model_weights(ckpt, model)
    if optimizer is not None:
        _load_optimizer(ckpt / "optimizer.safetensors", model, optimizer, meta["param_groups"])
    flat = read_tensors(ckpt / "hooks.safetensors")
    for name, hook in hooks.items():
        prefix = f"{name}/"
        hook.load_state_dict({k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)})
    _restore_rng(read_tensors(ckpt / "rng.safetensors"))
    return TrainingState(step=int(meta["step"]), extra=meta.get("extra", {}))


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or garbage file is one line."""
    try:
        return load_file(file)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing; the checkpoint is incomplete") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{file}: not a readable safetensors file ({first})") from None


def read_state(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``; unreadable or truncated is one line naming the file."""
    file = Path(ckpt) / "state.json"
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{file}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return meta


def load_hook_tensors(ckpt: Path, hook_name: str) -> dict[str, torch.Tensor]:
    flat = read_tensors(Path(ckpt) / "hooks.safetensors")
    prefix = f"{hook_name}/"
    return {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}


def _optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer):
    names = parameter_names(model)
    groups = [
        {k: v for k, v in group.items() if k != "params"}
        | {"params": [names[id(p)] for p in group["params"]]}
        for group in optimizer.param_groups
    ]
    if is_sharded(model):  # FSDP: gathered to full tensors on rank 0, keyed by name
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer, options=_full_options())
        per_param = full.get("state", {}).items()
    else:
        per_param = ((names[id(p)], optimizer.state.get(p, {})) for p in _params(optimizer))
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in per_param:
        for key, value in entry.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{name}/{key}"] = t.detach().cpu().contiguous()
    return tensors, groups


def _params(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _load_optimizer(
    file: Path, model: nn.Module, optimizer: torch.optim.Optimizer, groups: list[dict]
) -> None:
    flat = read_tensors(file)
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
    if is_sharded(model):  # the same content keyed by name; each rank keeps its shard
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        names = [name for saved in groups for name in saved["params"]]
        full = {
            "state": {names[i]: entry for i, entry in state.items()},
            "param_groups": [g | {"params": [names[i] for i in g["params"]]} for g in param_groups],
        }
        # strict=False: a parameter that never had a gradient (a skipped block) has no state
        options = _full_options(cpu_offload=False, strict=False)
        set_optimizer_state_dict(model, optimizer, full, options=options)
        for i, name in enumerate(names):  # the loader's warm-up step gave those a state: drop it
            if i not in state:
                optimizer.state.pop(by_name[name], None)
        return
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def _rng_tensors() -> dict[str, torch.Tensor]:
    """The CPU generator and that of the CUDA device in use (under torchrun every rank owns
    one device; reading all of them would open a context on every GPU)."""
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = torch.cuda.get_rng_state()
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if not torch.cuda.is_available():
        return
    if "torch_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["torch_cuda"])
        return
    # checkpoints written before the per-device key held every device's state
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _model_config(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep_last: int, current: Path) -> None:
    """Keep ``current`` (what ``latest`` names) and the newest ``keep_last - 1`` before it.

    Checkpoints of later steps belong to no run this one continues (``latest`` never names
    them), so they go too; sorting by name alone once deleted ``current`` instead."""
    if keep_last <= 0:
        return
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    before = [p.name for p in done if p.name < current.name]
    keep = {current.name, *before[::-1][: keep_last - 1]}
    for old in done:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)

"""What every entry point shares: Hydra composition, one-line errors, output files."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sparselm.cli.hydra_flags import (
    cfg_text,
    compose_unresolved,
    help_text,
    info_text,
    parse_flags,
    run_multirun,
    sweep,
)
from sparselm.errors import ConfigError, SparselmError


def conf_dir() -> Path:
    """The repository's ``conf/`` (``SPARSELM_CONF_DIR`` points elsewhere)."""
    return Path(os.environ.get("SPARSELM_CONF_DIR", Path(__file__).resolve().parents[3] / "conf"))


def compose_config(config_name: str, argv: Sequence[str]) -> tuple[DictConfig, Path]:
    """Compose ``conf/<config_name>.yaml`` with command-line overrides.

    Returns the resolved job config (without the ``hydra`` node) and ``hydra.run.dir``.
    """
    _refuse_unknown_added_keys(config_name, argv)
    cfg = compose_unresolved(conf_dir(), config_name, argv)
    run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(" ".join(str(e).split())) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: pass {missing[0]}=<value>")
    return cfg, run_dir


def _refuse_unknown_added_keys(config_name: str, argv: Sequence[str]) -> None:
    """``+key=value`` may only set keys the config has (a typo would else be carried along
    silently: ``+method.levle=0.5`` trained a dense run). ``++key=value`` is Hydra's "add or
    override", for a key some choices of a group lack (``++prune.calibration_samples=16``
    applies to every pruner of a study): it stays allowed."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
    except HydraException as e:
        raise ConfigError(" ".join(str(e).split())) from None
    added = [
        o
        for o in parsed
        if o.is_add()
        and not o.key_or_group.startswith("hydra.")
        and not (conf_dir() / o.key_or_group).is_dir()  # +group=option adds a config group
    ]
    if not added:
        return
    kept = [o.input_line for o in parsed if o not in added]
    base = compose_unresolved(conf_dir(), config_name, kept)
    for o in added:
        if OmegaConf.select(base, o.key_or_group, default=_ABSENT) is _ABSENT:
            parent, _, _ = o.key_or_group.rpartition(".")
            node = OmegaConf.select(base, parent) if parent else base
            known = (
                ", ".join(k for k in node if k != "hydra") if isinstance(node, DictConfig) else ""
            )
            raise ConfigError(
                f"{o.key_or_group} is not a known key (added by {o.input_line})"
                + (f"; keys under {parent or 'the top level'}: {known}" if known else "")
            )


_ABSENT = object()


def run_cli(
    main: Callable[[Sequence[str]], int | None],
    config_name: str,
    argv: Sequence[str] | None = None,
) -> None:
    """Run an entry point with Hydra's flags (``--help``, ``--cfg``, ``--info``, ``-m``);
    a user error becomes one line on stderr and exit code 2."""
    try:
        code = _dispatch(main, config_name, sys.argv[1:] if argv is None else argv)
    except SparselmError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def _dispatch(main: Callable[[Sequence[str]], int | None], config_name: str, argv) -> int | None:
    flags = parse_flags(argv)
    if not (flags.help or flags.cfg or flags.info or flags.multirun):
        return main(flags.overrides)
    if flags.multirun:
        first = compose_unresolved(conf_dir(), config_name, _first_values(flags.overrides))
        return run_multirun(main, Path(first.hydra.sweep.dir), flags.overrides)
    cfg = compose_unresolved(conf_dir(), config_name, flags.overrides)
    if flags.help:
        doc = sys.modules[main.__module__].__doc__ or ""
        print(help_text(conf_dir(), config_name, doc, cfg))
    elif flags.cfg:
        print(cfg_text(cfg, flags.cfg, flags.resolve), end="")
    else:
        print(info_text(conf_dir(), config_name, flags.info, cfg))
    return 0


def _first_values(overrides: Sequence[str]) -> list[str]:
    return sweep(overrides)[0]


def typed(cls: type, node: Any, key: str, **extra: Any) -> Any:
    """Build a frozen config dataclass from a config node, naming any bad key in one line."""
    values = dict(OmegaConf.to_container(node, resolve=True) if node is not None else {})
    values.update(extra)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]} is not a known key; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        values[name] = _coerce(value, hints[name], f"{key}.{name}")
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{key}: {e}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (
        hint in (int, float, str, bool)
        and not isinstance(value, hint)
        or (hint in (int, float) and isinstance(value, bool))
    ):
        raise ConfigError(f"{key}={value!r} must be of type {hint.__name__}")
    return value


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} requested but CUDA is not available; use device=cpu")
    return torch.device(name)


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_resolved_config(cfg: DictConfig, run_dir: Path) -> str:
    """Write ``config.yaml`` beside the outputs; returns the YAML for the checkpoints."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    write_text_atomic(run_dir / "config.yaml", text)
    return text

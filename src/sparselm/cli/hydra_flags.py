"""Hydra's own command-line flags over the compose API: ``--help``, ``--cfg``, ``--info``, ``-m``.

The entry points compose their config with ``hydra.compose`` (so a bad value is one line and
exit code 2, and nothing is written before the config is checked) instead of ``@hydra.main``;
this module gives them the flags users of Hydra expect. ``-m``/``--multirun`` runs the
cartesian product of comma-separated or ``range()`` values one job after another, job ``i``
in ``<hydra.sweep.dir>/<i>`` (the list of jobs in ``<hydra.sweep.dir>/multirun.yaml``).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sparselm.errors import ConfigError

CFG_PARTS = ("job", "hydra", "all")
INFO_PARTS = ("all", "config", "defaults", "searchpath")
FLAGS_HELP = """\
Flags (as in Hydra):
  --help, -h            this help
  --cfg, -c job|hydra|all   print the composed config and exit (--resolve: resolve it)
  --info, -i [all|config|defaults|searchpath]   where the config comes from, and exit
  --multirun, -m        sweep: key=a,b or key=range(0,3) runs one job per combination"""


@dataclass
class Flags:
    help: bool = False
    cfg: str | None = None
    resolve: bool = False
    info: str | None = None
    multirun: bool = False
    overrides: list[str] = field(default_factory=list)


def parse_flags(argv: Sequence[str]) -> Flags:
    """Split Hydra's flags from the overrides; an unknown flag is a one-line error."""
    flags, args = Flags(), list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--help", "-h"):
            flags.help = True
        elif arg in ("--cfg", "-c"):
            flags.cfg = args.pop(0) if args else ""
            if flags.cfg not in CFG_PARTS:
                raise ConfigError(f"--cfg {flags.cfg!r}: allowed: {', '.join(CFG_PARTS)}")
        elif arg == "--resolve":
            flags.resolve = True
        elif arg in ("--info", "-i"):
            flags.info = args.pop(0) if args and args[0] in INFO_PARTS else "all"
        elif arg in ("--multirun", "-m"):
            flags.multirun = True
        elif arg.startswith("-"):
            raise ConfigError(f"unknown flag {arg}; allowed: --help, --cfg, --info, --multirun")
        else:
            flags.overrides.append(arg)
    return flags


def compose_unresolved(conf_dir: Path, config_name: str, overrides: Sequence[str]) -> DictConfig:
    """The composed config with its ``hydra`` node, nothing resolved or validated yet."""
    try:
        with initialize_config_dir(
            config_dir=str(conf_dir), version_base="1.3", job_name=config_name
        ):
            return compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except MissingConfigException as e:
        raise ConfigError(_missing_message(e)) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(" ".join(str(e).split())) from None


def _missing_message(e: MissingConfigException) -> str:
    missing = getattr(e, "missing_cfg_file", "") or ""
    options = getattr(e, "options", None)
    if "/" in missing and options:
        group, name = missing.rsplit("/", 1)
        return f"{group}={name} is unknown; allowed: {', '.join(sorted(options))}"
    return " ".join(str(e).split())


def group_options(conf_dir: Path, cfg: DictConfig) -> dict[str, list[str]]:
    """Every config group this primary config uses, with the options on disk."""
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    groups = {}
    for group in sorted(g for g in choices if not g.startswith("hydra")):
        folder = conf_dir / group
        groups[group] = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    return groups


def help_text(conf_dir: Path, config_name: str, doc: str, cfg: DictConfig) -> str:
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    lines = [
        doc.strip(),
        "",
        f"Usage: python -m sparselm.cli.{config_name} [flags] [key=value ...]",
    ]
    lines += ["", FLAGS_HELP, "", "Config groups (group=option; * = the default):"]
    for group, options in group_options(conf_dir, cfg).items():
        marked = [f"{o}*" if o == choices.get(group) else o for o in options]
        lines.append(f"  {group}: {', '.join(marked)}")
    lines += ["", "Config (override any key as key=value; see all with --cfg job):", ""]
    lines.append(_job_yaml(cfg, resolve=False).rstrip())
    return "\n".join(lines)


def info_text(conf_dir: Path, config_name: str, part: str, cfg: DictConfig) -> str:
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    sections = {
        "searchpath": [
            "Config search path:",
            f"  file://{conf_dir}",
            f"  primary: {config_name}.yaml",
        ],
        "defaults": ["Defaults list (group: option):"]
        + [f"  {g}: {o}" for g, o in sorted(choices.items()) if not g.startswith("hydra")],
        "config": ["Overrides:"]
        + [f"  {o}" for o in cfg.hydra.overrides.task]
        + [f"Run folder (hydra.run.dir): {cfg.hydra.run.dir}"],
    }
    parts = list(sections) if part == "all" else [part]
    return "\n".join(line for p in parts for line in [*sections[p], ""]).rstrip()


def cfg_text(cfg: DictConfig, part: str, resolve: bool) -> str:
    if part == "job":
        return _job_yaml(cfg, resolve)
    node = cfg if part == "all" else OmegaConf.create({"hydra": cfg.hydra})
    return OmegaConf.to_yaml(node, resolve=resolve)


def _job_yaml(cfg: DictConfig, resolve: bool) -> str:
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(job):
        del job["hydra"]
    return OmegaConf.to_yaml(job, resolve=resolve)


def sweep(overrides: Sequence[str]) -> list[list[str]]:
    """One override list per job: the cartesian product of every sweep override's values."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(" ".join(str(e).split())) from None
    axes = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            axes.append([f"{key}={value}" for value in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(job) for job in itertools.product(*axes)]


def run_multirun(
    main: Callable[[Sequence[str]], int | None], sweep_dir: Path, overrides: Sequence[str]
) -> int:
    """Run every job of the sweep in turn; the first failure stops the sweep."""
    jobs = sweep(overrides)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    listing = [{"num": i, "overrides": job} for i, job in enumerate(jobs)]
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(listing, sort_keys=False))
    for i, job in enumerate(jobs):
        print(f"[multirun] job {i}: {' '.join(job)}", file=sys.stderr)
        job = [o for o in job if not o.startswith("hydra.run.dir=")]  # each job has its own
        code = main([*job, f"hydra.run.dir={sweep_dir / str(i)}"])
        if code:
            return code
    return 0

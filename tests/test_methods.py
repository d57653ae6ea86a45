"""Invariants every registered training method is held to, parametrised over the registry.

A new entry in ``sparselm.cli.method_registry.METHODS`` (a module declaring ``METHOD``) is
checked here with no new test: its declared no-op trains bit for bit like dense,
stop-and-resume equals an uninterrupted run, the FLOP ledger's total is the sum of its logged
steps, and masks (where the hooks keep them) hold masked weights at exactly zero. Runs are
composed from conf/ as a job composes them, on a 4-layer smoke-sized model with dropout on, so
a method that draws from the global RNG (and so shifts the dropout masks) cannot look like
dense.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import RandomTokens
from omegaconf import OmegaConf

from sparselm.cli import builders
from sparselm.cli.common import compose_config
from sparselm.cli.method_registry import METHODS, declared_methods, method_hooks, parse_method
from sparselm.errors import ConfigError
from sparselm.method_declaration import FULL_DEPTH
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.optim import build_adamw
from sparselm.sparsity.mask_set import MaskSet
from sparselm.train import TrainConfig, TrainRun, train

STEPS = 12
BASE = ("scale=smoke", "model.n_layer=4", "model.dropout=0.1", "tokenizer.vocab_size=256")
ACTIVE = sorted(name for name in METHODS if name != "none")


def _compose(name: str, overrides: tuple[str, ...]):
    cfg, _ = compose_config("pretrain", [*BASE, f"method={name}", *overrides])
    return cfg


def _run(cfg, out: Path, with_hooks: bool = True) -> TrainRun:
    """A fresh run of ``cfg`` (new model, optimizer and hooks), as a new process would build."""
    model_cfg = builders.model_config(cfg, cfg.model.vocab_size)
    model = builders.build_model(model_cfg, int(cfg.seed), torch.device("cpu"))
    optim = builders.optim_config(cfg)
    seq = int(cfg.train.seq_len)
    hooks = method_hooks(cfg, model, STEPS) if with_hooks else []
    return TrainRun(
        model,
        build_adamw(model, optim),
        RandomTokens(vocab=model_cfg.vocab_size, batch=4, seq=seq),
        TrainConfig(steps=STEPS, eval_every=6, eval_batches=1, ckpt_every=4, progress="off"),
        optim,
        out,
        hooks=hooks,
        flops_per_token=builders.flops_function(
            builders.model_shape(model_cfg, seq), cfg.flops.convention
        ),
    )


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    theirs = b.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_registry_entries_have_a_noop() -> None:
    for name in ACTIVE:
        assert METHODS[name].noop, f"method {name} declares no no-op setting"


def test_every_method_yaml_names_a_registered_method_and_back() -> None:
    conf = Path(__file__).resolve().parents[1] / "conf" / "method"
    names = {path.stem: yaml.safe_load(path.read_text())["name"] for path in conf.glob("*.yaml")}
    assert all(stem == name for stem, name in names.items()), names
    assert set(names) == set(METHODS)


def test_a_module_that_declares_a_method_is_registered_without_a_registry_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "adding a method is one module + one YAML": a package holding a module that ends in
    # METHOD = depth_method(...) and one that does not
    package = tmp_path / "extra_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "keep_all.py").write_text(
        "from sparselm.method_declaration import FULL_DEPTH, depth_method\n"
        "from sparselm.methods.raptr import RaptrConfig, RaptrHook\n"
        "METHOD = depth_method(RaptrConfig, RaptrHook, noop=FULL_DEPTH)\n"
    )
    (package / "helpers_only.py").write_text("VALUE = 1\n")
    # one declaration under two names (two YAMLs with other defaults)
    (package / "pair.py").write_text(
        "from sparselm.method_declaration import FULL_DEPTH, depth_method\n"
        "from sparselm.methods.raptr import RaptrConfig, RaptrHook\n"
        "from dataclasses import replace\n"
        "METHOD = replace(depth_method(RaptrConfig, RaptrHook, noop=FULL_DEPTH),"
        " names=('first', 'second'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = declared_methods([importlib.import_module("extra_methods")])
    assert sorted(found) == ["first", "keep_all", "second"]
    assert found["first"] is found["second"]
    entry = found["keep_all"]
    assert entry.noop == FULL_DEPTH and entry.from_depth is RaptrHook
    cfg = parse_method(entry, OmegaConf.create({"name": "keep_all", "stages": [1, 2]}))
    assert isinstance(cfg, RaptrConfig) and tuple(cfg.stages) == (1, 2)
    with pytest.raises(ConfigError, match="method.depth_typo"):
        parse_method(entry, OmegaConf.create({"name": "keep_all", "depth_typo": 1}))


@pytest.mark.parametrize("name", ACTIVE)
def test_noop_setting_trains_like_dense(name: str, tmp_path: Path) -> None:
    # the no-op on top of the short-run settings: switched off where it would otherwise act
    cfg = _compose(name, (*METHODS[name].short_run, *METHODS[name].noop))
    method = _run(cfg, tmp_path / "method")
    assert method.hooks, "the no-op setting still builds the method's hooks"
    train(method)
    # dense: the same composed config (optimizer groups included), no hooks
    dense = _run(cfg, tmp_path / "dense", with_hooks=False)
    train(dense)
    _assert_same_weights(method.model, dense.model)
    losses = [(r["step"], r["train_loss"], r.get("val_loss")) for r in _log(tmp_path / "method")]
    assert losses == [
        (r["step"], r["train_loss"], r.get("val_loss")) for r in _log(tmp_path / "dense")
    ]


@pytest.mark.parametrize("name", ACTIVE)
def test_resume_equals_uninterrupted(name: str, tmp_path: Path) -> None:
    cfg = _compose(name, METHODS[name].short_run)
    whole = _run(cfg, tmp_path / "whole")
    train(whole)
    train(_run(cfg, tmp_path / "split"), stop_at=6)  # "killed" after step 6 (checkpoint at 4)
    resumed = _run(cfg, tmp_path / "split")
    train(resumed)
    _assert_same_weights(whole.model, resumed.model)
    drop = ("step_time_s", "tokens_per_s")  # wall-clock fields
    strip = [{k: v for k, v in r.items() if k not in drop} for r in _log(tmp_path / "whole")]
    assert strip == [
        {k: v for k, v in r.items() if k not in drop} for r in _log(tmp_path / "split")
    ]


@pytest.mark.parametrize("name", ACTIVE)
def test_flop_ledger_sums_the_logged_steps(name: str, tmp_path: Path) -> None:
    cfg = _compose(name, METHODS[name].short_run)
    run = _run(cfg, tmp_path / "run")
    metrics = train(run)
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    # each step's cost from a freshly built set of hooks: the schedule, not the run's state
    fresh = _run(cfg, tmp_path / "fresh")
    per_token = run.flops_per_token
    tokens = 4 * int(cfg.train.seq_len)
    expected, total = [], 0.0
    for step in range(STEPS):
        factors: dict = {}
        for hook in fresh.hooks:
            factors.update(hook.flop_factors(step))
        total += tokens * per_token(factors)
        expected.append(total)
    assert [r["flops_cum"] for r in log] == pytest.approx(expected, rel=1e-12)
    assert metrics["flops_total"] == log[-1]["flops_cum"]
    dense = tokens * STEPS * per_token({})
    assert metrics["flops_total"] <= dense * (1 + 1e-12)


@pytest.mark.parametrize("name", [n for n in ACTIVE if METHODS[n].owns_masks])
def test_masked_weights_stay_exactly_zero(name: str, tmp_path: Path) -> None:
    cfg = _compose(name, METHODS[name].short_run)
    run = _run(cfg, tmp_path / "run")
    train(run)
    mask_sets = [h.masks for h in run.hooks if isinstance(getattr(h, "masks", None), MaskSet)]
    assert mask_sets, f"method {name} declares owns_masks but no hook holds a MaskSet"
    masked = 0
    for masks in mask_sets:
        for param_name, mask in masks.masks.items():
            weight = masks.params[param_name].detach()
            masked += int((~mask).sum())
            assert torch.count_nonzero(weight[~mask]) == 0, param_name
    assert masked > 0, "the short run masked nothing: the check would be vacuous"

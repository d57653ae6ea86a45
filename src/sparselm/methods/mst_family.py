"""The MST family's one declaration: ``method=mst``, ``rigl``, ``set`` and ``static_sparse``
share ``MSTConfig`` (one nested schema) and differ only in their YAML's defaults
(``conf/method/<name>.yaml``). Its YAML node is parsed by ``sparselm.cli.mst_config``.
"""

from __future__ import annotations

import sys

from sparselm.hooks import TrainHook
from sparselm.method_declaration import MethodDeclaration, RunShape
from sparselm.methods import mst
from sparselm.model import GPT


def build(cfg: mst.MSTConfig, model: GPT, run: RunShape) -> list[TrainHook]:
    """The family's hooks, solved for this run; a solved FLOP budget is logged with its knob."""
    plan, hooks = mst.build_hooks(cfg, model, run.total_steps, run.seq_len, run.convention)
    solved = plan.cfg
    if cfg.target_reduction is not None:  # the job's log records what the budget fixed
        bases = mst.attention_bases(plan)
        print(
            f"method: {solved.knob}={solved.knob_value():.6f} gives "
            f"{plan.ledger()['reduction']:.4f}x fewer training FLOPs ({run.convention}, "
            f"attention basis {bases['target_basis']}; full_t2 {bases['full_t2']:.4f}x, "
            f"causal_pairs {bases['causal_pairs']:.4f}x)",
            file=sys.stderr,
        )
    return hooks


METHOD = MethodDeclaration(
    mst.MSTConfig,
    build,
    owns_masks=True,
    # density 1 everywhere, no mask update (so no skipped optimizer step), dense attention
    noop=(
        "method.target_reduction=null",
        "method.sparsity.schedule=constant",
        "method.sparsity.level=0.0",
        "method.sparsity.dst.drop_fraction=0.0",
        "method.sparsity.dst.end_frac=0.0",
        "method.hsa.enabled=false",
    ),
    # an update every 3 steps costs dense gradients often: 4x is out of reach in 12 steps
    short_run=(
        "method.sparsity.dst.interval=3",
        "method.hsa.stride=8",
        "method.target_reduction=2.0",
    ),
    names=("mst", "rigl", "set", "static_sparse"),
)

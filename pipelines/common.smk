# Shared helpers: config validation, the study grid, and wildcards -> Hydra overrides.
import functools
import os
import shlex
import sys
from pathlib import Path

import jsonschema
import yaml

CHECKOUT = Path(workflow.current_basedir).parent  # the repository this file belongs to
# the few torch-free helpers read while the DAG is built come from this checkout, so a
# Snakemake without sparselm installed (a bare conda env, --use-conda) can build the DAG
sys.path.insert(0, str(CHECKOUT / "src"))


def _validate(cfg: dict) -> None:
    """Fail before any job runs, in one line that names the offending key."""
    schema = yaml.safe_load((CHECKOUT / "pipelines/config/schema.yaml").read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"bad study config: key {key}: {error.message}")


_validate(config)
# Rules run `python -m sparselm.cli...` and `python -m analysis...`: put this checkout's code
# first on the path, so they work in a --use-conda environment that does not install sparselm.
# (set, not required, so no `envvars:` directive)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        filter(None, [f"{CHECKOUT}/src", str(CHECKOUT), os.environ.get("PYTHONPATH")])
    )
)
SCALE = config["scale"]
DATA = config["data_dir"]
RESULTS = config["results_dir"]
REPORTS = config["reports_dir"] or f"{RESULTS}/reports"


def _at_scale(*keys: str):
    """The entry for this scale under config[keys...], or a one-line error naming the key."""
    table = functools.reduce(lambda node, key: node[key], keys, config)
    if SCALE not in table:
        raise ValueError(f"bad study config: key {'.'.join(keys)} has no entry for scale={SCALE!r}")
    return table[SCALE]


SPDF = _at_scale("spdf", "grids")
RAPTR = _at_scale("raptr", "grids")
SQHEAD = _at_scale("squarehead", "grids")
MST = _at_scale("mst", "grids")
COMPARE = _at_scale("compare", "grids")
for _variant, _source in MST["pinned"].items():
    for _name in (_variant, _source):
        if _name not in MST["variants"]:
            raise ValueError(f"bad study config: key mst.grids.{SCALE}.pinned.{_variant}: "
                             f"{_name!r} is not a variant of the grid")
for _study, _grid in (("spdf", SPDF), ("raptr", RAPTR), ("squarehead", SQHEAD), ("mst", MST),
                      ("compare", COMPARE)):
    # an unknown eval task fails here, when the DAG is built, not in the eval job
    from sparselm.evaluation.task_names import check_eval_tasks
    from sparselm.errors import ConfigError
    try:
        check_eval_tasks(_grid.get("zeroshot_tasks", []), f"{_study}.grids.{SCALE}.zeroshot_tasks")
    except ConfigError as _e:
        raise ValueError(f"bad study config: key {_e}") from None
# percent of one GPU a training / scoring job holds (the local profile offers 100)
TRAIN_GPU_SHARE = _at_scale("gpu_share", "training")
SCORE_GPU_SHARE = _at_scale("gpu_share", "scoring")


# wildcard values are formatted floats ("0.75", "1.0") and integers
wildcard_constraints:
    sparsity=r"\d\.\d{1,6}",
    fraction=r"\d\.\d{1,6}",
    seed=r"\d{1,9}",
    task=r"[a-z0-9]{1,32}",
    variant=r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*",  # no dots: never an SPDF s<sparsity> folder
    pruner=r"magnitude|sparsegpt|gradual",
    target=r"s\d\.\d{1,6}|nm\d+x\d+",  # unstructured sparsity s0.7, or N:M as nm2x4
    loss=r"ce(?:_kl)?(?:_squarehead)?",


def fmt(x) -> str:
    return str(float(x))


def slug(*parts) -> str:
    """A W&B run id: stable for the same wildcards, so a rerun resumes the same run."""
    return "-".join(str(p).replace(".", "p") for p in parts)


def job_overrides(stage: str, run_id: str, out_dir: str, study: str) -> str:
    """Overrides every entry point takes: data, device, W&B identity, output folder."""
    return (f"device={config['device']} paths.data_dir={DATA} "
            f"logger.mode={config['wandb_mode']} logger.group={study} logger.job_type={stage} "
            f"logger.name={run_id} logger.run_id={slug(study, SCALE, run_id)} "
            f"hydra.run.dir={out_dir}")


def common_overrides(stage: str, run_id: str, out_dir: str, study: str) -> str:
    """Training jobs also take the scale, which sizes them."""
    return f"scale={SCALE} {job_overrides(stage, run_id, out_dir, study)}"


def sparsity_overrides(sparsity) -> str:
    """Sparsity 0 is the dense control: no masks at all, the same loop."""
    if float(sparsity) == 0.0:
        return "sparsity=dense"
    return f"sparsity=static sparsity.level={sparsity}"


def limit_override(limit) -> str:
    return "limit=null" if limit is None else f"limit={limit}"


NLG_TASK = {"e2e": "sparselm_e2e_nlg", "webnlg": "sparselm_webnlg", "dart": "sparselm_dart"}


def spdf_runs(study: str = "spdf") -> dict[str, list[str]]:
    """Every metrics.json the SPDF grid of this scale makes."""
    g = SPDF
    pre = expand(f"{RESULTS}/{study}/pretrain/s{{s}}_seed{{seed}}/metrics.json",
                 s=map(fmt, g["sparsities"]), seed=g["seeds"])
    zero = expand(f"{RESULTS}/{study}/eval_zeroshot/s{{s}}_seed{{seed}}/metrics.json",
                  s=map(fmt, g["sparsities"]), seed=g["seeds"]) if g["zeroshot_tasks"] else []
    grid = dict(task=g["tasks"], s=list(map(fmt, g["sparsities"])),
                f=list(map(fmt, g["fractions"])), seed=g["seeds"])
    ft = expand(f"{RESULTS}/{study}/finetune/{{task}}/s{{s}}_f{{f}}_seed{{seed}}/metrics.json",
                **grid)
    nlg = expand(f"{RESULTS}/{study}/eval_nlg/{{task}}/s{{s}}_f{{f}}_seed{{seed}}/metrics.json",
                 **grid)
    return {"pretrain": pre, "eval_zeroshot": zero, "finetune": ft, "eval_nlg": nlg}


def grid_variant_overrides(grid: dict, variant: str) -> str:
    """A variant grid's Hydra overrides for one variant (the scale's, then the variant's own),
    shell-quoted: what the RaPTr and comparison grids run."""
    words = shlex.split(f"{grid['overrides']} {grid['variants'][variant]}")
    return " ".join(shlex.quote(w) for w in words)


def variant_overrides(variant: str) -> str:
    """The RaPTr grid's Hydra overrides for one variant (after the scale's), shell-quoted."""
    return grid_variant_overrides(RAPTR, variant)


def variant_stages(grid: dict) -> tuple[str, ...]:
    """A variant study's stages: zero-shot scoring only when the grid names tasks."""
    return ("pretrain", "eval_zeroshot") if grid["zeroshot_tasks"] else ("pretrain",)


def finetune_overrides(study: str) -> str:
    """A study's extra fine-tuning overrides: SPDF's (equal steps at every fraction, say) or
    the SquareHead teacher's (trained until it beats its students)."""
    grid = {"spdf": SPDF, "squarehead": SQHEAD}[study]
    return grid.get("teacher_overrides" if study == "squarehead" else "finetune_overrides", "")


def pretrained_run(wc) -> str:
    """The checkpoint a fine-tuning job starts from: SquareHead's teacher starts from the SPDF
    study's dense pre-training run of the same seed (shared, not trained twice)."""
    study = "spdf" if wc.study == "squarehead" else wc.study
    return f"{RESULTS}/{study}/pretrain/s{wc.sparsity}_seed{wc.seed}/metrics.json"


def variant_runs(study: str, grid: dict) -> dict[str, list[str]]:
    """Every metrics.json a variant grid (``<variant>_seed<seed>`` runs) of this scale makes."""
    runs = dict(variant=list(grid["variants"]), seed=grid["seeds"])
    return {stage: expand(f"{RESULTS}/{study}/{stage}/{{variant}}_seed{{seed}}/metrics.json", **runs)
            for stage in variant_stages(grid)}


def raptr_runs() -> dict[str, list[str]]:
    """Every metrics.json the RaPTr grid of this scale makes."""
    return variant_runs("raptr", RAPTR)


def compare_runs() -> dict[str, list[str]]:
    """Every metrics.json the comparison grid of this scale makes."""
    return variant_runs("compare", COMPARE)


def sqhead_targets() -> list[str]:
    """Run-folder names of the pruning targets: s0.7 (unstructured), nm2x4 (N:M)."""
    return ([f"s{fmt(s)}" for s in SQHEAD["sparsities"]]
            + [f"nm{p.replace(':', 'x')}" for p in SQHEAD["nm"]])


SQHEAD_TEACHER = "{task}/s0.0_f1.0_seed{seed}/metrics.json"


def sqhead_teacher(wc) -> str:
    """The SquareHead teacher: the SPDF study's dense pre-trained model fine-tuned on the full
    task pool with the grid's teacher_overrides, in squarehead/finetune/."""
    teacher = SQHEAD_TEACHER.format(task=wc.task, seed=wc.seed)
    return f"{RESULTS}/squarehead/finetune/{teacher}"


def prune_target_overrides(target: str) -> str:
    if target.startswith("nm"):
        return f"prune.nm='{target[2:].replace('x', ':')}'"
    return f"prune.sparsity={target[1:]}"


def sqhead_overrides() -> str:
    words = shlex.split(SQHEAD["overrides"])
    return " ".join(shlex.quote(w) for w in words)


def sqhead_runs() -> dict[str, list[str]]:
    """Every metrics.json the SquareHead grid of this scale reads (teachers included)."""
    g = SQHEAD
    grid = dict(task=[g["task"]], pruner=g["pruners"], target=sqhead_targets(),
                loss=g["losses"], seed=g["seeds"])
    name = "{task}/{pruner}_{target}_{loss}_seed{seed}/metrics.json"
    return {
        "sparse_finetune": expand(f"{RESULTS}/squarehead/sparse_finetune/{name}", **grid),
        "eval_sparse_nlg": expand(f"{RESULTS}/squarehead/eval_sparse_nlg/{name}", **grid),
        "eval_teacher_nlg": expand(
            f"{RESULTS}/squarehead/eval_teacher_nlg/{{task}}/dense_seed{{seed}}/metrics.json",
            task=[g["task"]], seed=g["seeds"]),
        "teacher": expand(f"{RESULTS}/squarehead/finetune/{SQHEAD_TEACHER}",
                          task=[g["task"]], seed=g["seeds"]),
    }


def _mst_words(variant: str) -> list[str]:
    """The MST grid's Hydra overrides for one variant, before any pinning: the scale's, then
    (for a sparse method) the FLOP budget and sparse overrides, then the variant's own."""
    own = shlex.split(MST["variants"][variant])
    words = shlex.split(MST["overrides"])
    if "method=none" not in own:
        words += [f"method.target_reduction={MST['target_reduction']}",
                  *shlex.split(MST["sparse_overrides"])]
    return words + own


def mst_variant_overrides(variant: str) -> str:
    """Hydra overrides of one MST-grid variant, shell-quoted (a pinned variant adds its source
    run's solved knob at job time: mst_pin_source, sparselm.cli.pin_knob)."""
    return " ".join(shlex.quote(w) for w in _mst_words(variant))


def mst_pin_source(wildcards) -> list[str]:
    """A pinned variant's input: the same seed's run of the variant whose solved knob it keeps."""
    source = MST["pinned"].get(wildcards.variant)
    if source is None:
        return []
    return [f"{RESULTS}/mst/pretrain/{source}_seed{wildcards.seed}/metrics.json"]


def mst_runs() -> dict[str, list[str]]:
    """Every metrics.json the MST grid of this scale makes."""
    return variant_runs("mst", MST)


onstart:
    # one pipeline per results folder: Snakemake's own lock covers only its working directory
    from sparselm.cli.run_folder import lock_results_dir
    lock_results_dir(Path(RESULTS))

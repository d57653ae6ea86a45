# Shared helpers: config validation, the study grid, and wildcards -> Hydra overrides.
import functools
import os
import shlex
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.utils import update_config

CHECKOUT = Path(workflow.current_basedir).parent  # the repository this file belongs to
# the few torch-free helpers read while the DAG is built come from this checkout, so a
# Snakemake without sparselm installed (a bare conda env, --use-conda) can build the DAG
sys.path.insert(0, str(CHECKOUT / "src"))
sys.path.insert(0, str(CHECKOUT))  # analysis.study_declaration reads pipelines/studies/

from analysis.study_declaration import declared_studies, load_declaration


def _study_schema(layout: str, needs: dict) -> dict:
    """A declared study's config key: its grids, each its layout's grid plus what the
    declaration requires of it (keys, variants)."""
    grid = {"allOf": [{"$ref": f"#/$defs/{layout}_grid"},
                      {"required": needs.get("keys", []),
                       "properties": {"variants": {"required": needs.get("variants", [])}}}]}
    return {"type": "object", "additionalProperties": False, "required": ["grids"],
            "properties": {"grids": {"type": "object", "additionalProperties": grid}}}


def _validate(cfg: dict) -> None:
    """Fail before any job runs, in one line that names the offending key."""
    schema = yaml.safe_load((CHECKOUT / "pipelines/config/schema.yaml").read_text())
    for study, declared in STUDIES.items():
        schema["properties"][study] = _study_schema(declared.layout, declared.grid_requires)
        schema["required"].append(study)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"bad study config: key {key}: {error.message}")


# a study is its declaration (pipelines/studies/<study>.yaml: run layout, tables, figures and
# its grid of runs per scale); a --config/--configfile value for <study>.grids overrides it
STUDIES = {study: load_declaration(study) for study in declared_studies()}


for _study, _declared in STUDIES.items():
    # merged key by key, as Snakemake merges config files: overriding one scale keeps the rest
    _node = {"grids": _declared.grids}
    update_config(_node, config.get(_study) or {})
    config[_study] = _node
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


GRIDS = {study: _at_scale(study, "grids") for study in STUDIES}
SPDF, SQHEAD = GRIDS["spdf"], GRIDS["squarehead"]
# the studies whose runs pretrain (SquareHead starts from the SPDF study's dense runs)
PRETRAINING = [s for s, d in STUDIES.items() if d.layout in ("sparsity", "variant")]
for _study, _grid in GRIDS.items():
    for _variant, _source in _grid.get("pinned", {}).items():
        for _name in (_variant, _source):
            if _name not in _grid["variants"]:
                raise ValueError(f"bad study config: key {_study}.grids.{SCALE}.pinned.{_variant}: "
                                 f"{_name!r} is not a variant of the grid")
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
    run=r"[a-z][a-z0-9.]*(?:_[a-z0-9.]+)*_seed\d{1,9}",  # s0.75_seed0 (SPDF), rigl_seed0
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


NLG_TASK = {"e2e": "sparselm_e2e_nlg", "webnlg": "sparselm_webnlg", "dart": "sparselm_dart"}


def split_run(run: str) -> tuple[str, str]:
    """``<name>_seed<seed>`` -> (name, seed): name is s<sparsity> (SPDF) or a variant."""
    name, seed = run.rsplit("_seed", 1)
    return name, seed


def job_name(stage: str, run: str) -> str:
    """A run's W&B name: ``pretrain-rigl-seed0``."""
    return f"{stage}-{run.replace('_seed', '-seed')}"


def shell_words(words) -> str:
    """Hydra override words (a string or a list), each shell-quoted."""
    words = shlex.split(words) if isinstance(words, str) else words
    return " ".join(shlex.quote(w) for w in words)


def grid_words(grid: dict, variant: str) -> list[str]:
    """A variant's Hydra overrides: the scale's, then (a grid with `sparse_overrides`, for a
    sparse method) the FLOP budget and the sparse overrides, then the variant's own."""
    own = shlex.split(grid["variants"][variant])
    words = shlex.split(grid["overrides"])
    if "sparse_overrides" in grid and "method=none" not in own:
        words += [f"method.target_reduction={grid['target_reduction']}",
                  *shlex.split(grid["sparse_overrides"])]
    return words + own


def run_overrides(study: str, run: str) -> str:
    """The Hydra overrides of one pre-training run, shell-quoted: SPDF's s<sparsity> (0 is the
    dense control: no masks at all, the same loop) or a variant of the study's grid (a pinned
    variant adds its source run's solved knob at job time: pin_source, sparselm.cli.pin_knob)."""
    name, _ = split_run(run)
    if STUDIES[study].layout == "sparsity":
        return "method=none" if float(name[1:]) == 0.0 else f"method=static method.level={name[1:]}"
    return shell_words(grid_words(GRIDS[study], name))


def pin_source(wc) -> list[str]:
    """A pinned variant's input: the same seed's run of the variant whose solved knob it keeps."""
    name, seed = split_run(wc.run)
    source = GRIDS[wc.study].get("pinned", {}).get(name)
    return [f"{RESULTS}/{wc.study}/pretrain/{source}_seed{seed}/metrics.json"] if source else []


def limit_override(limit) -> str:
    return "limit=null" if limit is None else f"limit={limit}"


def nlg_overrides(grid: dict, task: str, checkpoint: str, seed) -> str:
    """Generation scoring of one fine-tuned checkpoint, as the study's grid sets it."""
    return (f"checkpoint={Path(checkpoint).parent} seed={seed} 'tasks=[{NLG_TASK[task]}]' "
            f"{limit_override(grid['nlg_limit'])} generation.num_beams={grid['num_beams']}")


def finetune_overrides(study: str) -> str:
    """A study's extra fine-tuning overrides: SPDF's (equal steps at every fraction, say) or
    the SquareHead teacher's (trained until it beats its students)."""
    key = "teacher_overrides" if study == "squarehead" else "finetune_overrides"
    return GRIDS[study].get(key, "")


def pretrained_run(wc) -> str:
    """The checkpoint a fine-tuning job starts from: SquareHead's teacher starts from the SPDF
    study's dense pre-training run of the same seed (shared, not trained twice)."""
    study = "spdf" if wc.study == "squarehead" else wc.study
    return f"{RESULTS}/{study}/pretrain/s{wc.sparsity}_seed{wc.seed}/metrics.json"


def variant_runs(study: str) -> dict[str, list[str]]:
    """Every metrics.json a variant grid (``<variant>_seed<seed>`` runs) of this scale makes;
    zero-shot scoring only when the grid names tasks."""
    grid = GRIDS[study]
    stages = ("pretrain", "eval_zeroshot") if grid["zeroshot_tasks"] else ("pretrain",)
    runs = dict(variant=list(grid["variants"]), seed=grid["seeds"])
    return {stage: expand(f"{RESULTS}/{study}/{stage}/{{variant}}_seed{{seed}}/metrics.json", **runs)
            for stage in stages}


def spdf_runs() -> dict[str, list[str]]:
    """Every metrics.json the SPDF grid of this scale makes."""
    g = SPDF
    runs = dict(s=list(map(fmt, g["sparsities"])), seed=g["seeds"])
    pre = expand(f"{RESULTS}/spdf/pretrain/s{{s}}_seed{{seed}}/metrics.json", **runs)
    zero = (expand(f"{RESULTS}/spdf/eval_zeroshot/s{{s}}_seed{{seed}}/metrics.json", **runs)
            if g["zeroshot_tasks"] else [])
    grid = dict(task=g["tasks"], f=list(map(fmt, g["fractions"])), **runs)
    name = "{task}/s{s}_f{f}_seed{seed}/metrics.json"
    return {"pretrain": pre, "eval_zeroshot": zero,
            "finetune": expand(f"{RESULTS}/spdf/finetune/{name}", **grid),
            "eval_nlg": expand(f"{RESULTS}/spdf/eval_nlg/{name}", **grid)}


def sqhead_targets() -> list[str]:
    """Run-folder names of the pruning targets: s0.7 (unstructured), nm2x4 (N:M)."""
    return ([f"s{fmt(s)}" for s in SQHEAD["sparsities"]]
            + [f"nm{p.replace(':', 'x')}" for p in SQHEAD["nm"]])


SQHEAD_TEACHER = f"{RESULTS}/squarehead/finetune/{{task}}/s0.0_f1.0_seed{{seed}}/metrics.json"


def sqhead_teacher(wc) -> str:
    """The SquareHead teacher: the SPDF study's dense pre-trained model fine-tuned on the full
    task pool with the grid's teacher_overrides, in squarehead/finetune/."""
    return SQHEAD_TEACHER.format(task=wc.task, seed=wc.seed)


def prune_target_overrides(target: str) -> str:
    if target.startswith("nm"):
        return f"prune.nm='{target[2:].replace('x', ':')}'"
    return f"prune.sparsity={target[1:]}"


def sqhead_runs() -> dict[str, list[str]]:
    """Every metrics.json the SquareHead grid of this scale reads (teachers included)."""
    g = SQHEAD
    seeds = dict(task=[g["task"]], seed=g["seeds"])
    grid = dict(pruner=g["pruners"], target=sqhead_targets(), loss=g["losses"], **seeds)
    name = "{task}/{pruner}_{target}_{loss}_seed{seed}/metrics.json"
    return {
        "sparse_finetune": expand(f"{RESULTS}/squarehead/sparse_finetune/{name}", **grid),
        "eval_sparse_nlg": expand(f"{RESULTS}/squarehead/eval_sparse_nlg/{name}", **grid),
        "eval_teacher_nlg": expand(
            f"{RESULTS}/squarehead/eval_teacher_nlg/{{task}}/dense_seed{{seed}}/metrics.json", **seeds),
        "teacher": expand(SQHEAD_TEACHER, **seeds),
    }


def study_runs(study: str) -> dict[str, list[str]]:
    """Every metrics.json a study's grid of this scale makes, by stage."""
    layout = STUDIES[study].layout
    return {"sparsity": spdf_runs, "squarehead": sqhead_runs}.get(layout, lambda: variant_runs(study))()


def report_options(study: str) -> str:
    """Options a study's report module takes besides --results, --out and --scale."""
    return f"--high-sparsity {SQHEAD['high_sparsity']}" if study == "squarehead" else ""


onstart:
    # one pipeline per results folder: Snakemake's own lock covers only its working directory
    from sparselm.cli.run_folder import lock_results_dir
    lock_results_dir(Path(RESULTS))

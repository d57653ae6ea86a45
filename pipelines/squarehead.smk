# SquareHead study (methods/squarehead.md): the SPDF study's dense pre-trained model (same seed),
# fine-tuned on the task by the shared finetune rule into squarehead/finetune/ with the grid's
# teacher_overrides, is the teacher; it is pruned at each sparsity (magnitude, SparseGPT)
# and fine-tuned with the mask fixed under each loss (CE, CE+KL, CE+SquareHead); every student
# and the teacher are scored with lm-eval; tables and figures -> reports/squarehead.md.


rule sparse_finetune:
    input:
        teacher=sqhead_teacher,
    output:
        f"{RESULTS}/squarehead/sparse_finetune/{{task}}/{{pruner}}_{{target}}_{{loss}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/squarehead/logs/sparse_finetune/{{task}}/{{pruner}}_{{target}}_{{loss}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/squarehead/benchmarks/sparse_finetune/{{task}}/{{pruner}}_{{target}}_{{loss}}_seed{{seed}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            common_overrides("sparse_finetune",
                             f"sparse-ft-{wc.task}-{wc.pruner}-{wc.target}-{wc.loss}-seed{wc.seed}",
                             str(Path(output[0]).parent), "squarehead"),
            f"teacher={Path(input.teacher).parent} task={wc.task} seed={wc.seed}",
            f"prune={wc.pruner} {prune_target_overrides(wc.target)} distill={wc.loss}",
            shell_words(SQHEAD["overrides"]),
        ]),
        launcher=config["launcher"],
    resources:
        gpu_share=TRAIN_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m sparselm.cli.sparse_finetune {params.overrides} > {log} 2>&1"


rule eval_sparse_nlg:
    input:
        f"{RESULTS}/squarehead/sparse_finetune/{{task}}/{{pruner}}_{{target}}_{{loss}}_seed{{seed}}/metrics.json",
    output:
        f"{RESULTS}/squarehead/eval_sparse_nlg/{{task}}/{{pruner}}_{{target}}_{{loss}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/squarehead/logs/eval_sparse_nlg/{{task}}/{{pruner}}_{{target}}_{{loss}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/squarehead/benchmarks/eval_sparse_nlg/{{task}}/{{pruner}}_{{target}}_{{loss}}_seed{{seed}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            job_overrides("evaluate",
                          f"eval-sparse-{wc.task}-{wc.pruner}-{wc.target}-{wc.loss}-seed{wc.seed}",
                          str(Path(output[0]).parent), "squarehead"),
            nlg_overrides(SQHEAD, wc.task, input[0], wc.seed),
        ]),
    resources:
        gpu_share=SCORE_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.evaluate {params.overrides} > {log} 2>&1"


rule eval_teacher_nlg:
    """The dense teacher, scored exactly as its students are."""
    input:
        sqhead_teacher,
    output:
        f"{RESULTS}/squarehead/eval_teacher_nlg/{{task}}/dense_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/squarehead/logs/eval_teacher_nlg/{{task}}/dense_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/squarehead/benchmarks/eval_teacher_nlg/{{task}}/dense_seed{{seed}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            job_overrides("evaluate", f"eval-teacher-{wc.task}-seed{wc.seed}",
                          str(Path(output[0]).parent), "squarehead"),
            nlg_overrides(SQHEAD, wc.task, input[0], wc.seed),
        ]),
    resources:
        gpu_share=SCORE_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.evaluate {params.overrides} > {log} 2>&1"


rule collect_squarehead:
    input:
        **sqhead_runs(),
    output:
        runs=f"{RESULTS}/squarehead/tables/runs.csv",
    log:
        f"{RESULTS}/squarehead/logs/collect.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.build runs --study squarehead --results {params.results} > {log} 2>&1"

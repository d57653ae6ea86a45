# SquareHead study (methods/squarehead.md): the SPDF study's dense pre-trained model (same seed),
# fine-tuned on the task by the shared finetune rule into squarehead/finetune/ with the grid's
# teacher_overrides, is the teacher; it is pruned at each sparsity (magnitude, SparseGPT)
# and fine-tuned with the mask fixed under each loss (CE, CE+KL, CE+SquareHead); every student
# and the teacher are scored with lm-eval; tables and figures -> reports/squarehead.md.

SQHEAD_TABLES = ["sqhead_table_main", "sqhead_table_gap"]
SQHEAD_FIGURES = ["sqhead_fig_acc_vs_sparsity", "sqhead_fig_loss_curves",
                  "sqhead_fig_layerwise_error"]


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
            sqhead_overrides(),
        ]),
    resources:
        gpu_share=TRAIN_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.sparse_finetune {params.overrides} > {log} 2>&1"


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
            f"checkpoint={Path(input[0]).parent} seed={wc.seed}",
            f"'tasks=[{NLG_TASK[wc.task]}]' {limit_override(SQHEAD['nlg_limit'])}",
            f"generation.num_beams={SQHEAD['num_beams']}",
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
            f"checkpoint={Path(input[0]).parent} seed={wc.seed}",
            f"'tasks=[{NLG_TASK[wc.task]}]' {limit_override(SQHEAD['nlg_limit'])}",
            f"generation.num_beams={SQHEAD['num_beams']}",
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
        curves=f"{RESULTS}/squarehead/tables/curves.csv",
    log:
        f"{RESULTS}/squarehead/logs/collect.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
        teachers=lambda wildcards, input: " ".join(str(Path(p).parent) for p in input.teacher),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.squarehead_runs --results {params.results}"
        " --teachers {params.teachers} > {log} 2>&1"


rule tables_squarehead:
    input:
        rules.collect_squarehead.output.runs,
    output:
        expand(f"{RESULTS}/squarehead/tables/{{name}}.{{ext}}", name=SQHEAD_TABLES,
               ext=["csv", "md"]),
    log:
        f"{RESULTS}/squarehead/logs/tables.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.squarehead_tables --results {params.results} > {log} 2>&1"


rule figures_squarehead:
    input:
        rules.collect_squarehead.output,
    output:
        [report(f"{RESULTS}/squarehead/figures/{name}.png", category="SquareHead",
                caption="report/figure.rst") for name in SQHEAD_FIGURES],
        expand(f"{RESULTS}/squarehead/figures/{{name}}.{{ext}}", name=SQHEAD_FIGURES,
               ext=["pdf", "csv"]),
    log:
        f"{RESULTS}/squarehead/logs/figures.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.squarehead_figures --results {params.results} > {log} 2>&1"


rule report_squarehead:
    input:
        rules.tables_squarehead.output,
        rules.figures_squarehead.output,
    output:
        md=report(f"{REPORTS}/squarehead.md", category="SquareHead", caption="report/study.rst"),
        figures=directory(f"{REPORTS}/squarehead_figures"),
    log:
        f"{RESULTS}/squarehead/logs/report.log",
    params:
        results=lambda wildcards, input: str(Path(input[0]).parents[1]),
        scale=SCALE,
        high=lambda wildcards: SQHEAD["high_sparsity"],
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.squarehead_report --results {params.results} --out {output.md} --scale {params.scale}"
        " --high-sparsity {params.high} > {log} 2>&1"

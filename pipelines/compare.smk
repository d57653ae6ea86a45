# Comparison study (docs/studies.md): dense, static sparse, RaPTr, RigL and MST pretrained on the
# same data, tokens per step, seeds and model, each at its own FLOP budget; then one tidy table
# -> the comparison table, the loss-vs-FLOPs figure and reports/compare.md. No method code of
# its own: every variant is a `method=` of the one training loop (the grid in default.yaml).
# Tokenizer and shards come from the shared data rules with study=compare.

COMPARE_TABLES = ["compare_table_main"]
COMPARE_FIGURES = ["compare_fig_loss_vs_flops"]


rule pretrain_compare:
    input:
        tokenizer=f"{RESULTS}/compare/prepare/tokenizer.json",
        shards=f"{RESULTS}/compare/prepare/shards/manifest.json",
    output:
        f"{RESULTS}/compare/pretrain/{{variant}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/compare/logs/pretrain/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/compare/benchmarks/pretrain/{{variant}}_seed{{seed}}.tsv",
    params:
        launcher=config["launcher"],
        overrides=lambda wc, input, output: " ".join([
            common_overrides("pretrain", f"pretrain-{wc.variant}-seed{wc.seed}",
                             str(Path(output[0]).parent), "compare"),
            grid_variant_overrides(COMPARE, wc.variant),
            f"seed={wc.seed} tokenizer.path={input.tokenizer}",
            f"data.shards_dir={Path(input.shards).parent}",
        ]),
    resources:
        gpu_share=TRAIN_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m sparselm.cli.pretrain {params.overrides} > {log} 2>&1"


rule eval_zeroshot_compare:
    input:
        f"{RESULTS}/compare/pretrain/{{variant}}_seed{{seed}}/metrics.json",
    output:
        f"{RESULTS}/compare/eval_zeroshot/{{variant}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/compare/logs/eval_zeroshot/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/compare/benchmarks/eval_zeroshot/{{variant}}_seed{{seed}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            job_overrides("evaluate", f"eval-zeroshot-{wc.variant}-seed{wc.seed}",
                          str(Path(output[0]).parent), "compare"),
            f"checkpoint={Path(input[0]).parent} seed={wc.seed}",
            f"'tasks=[{','.join(COMPARE['zeroshot_tasks'])}]'",
            limit_override(COMPARE["zeroshot_limit"]),
        ]),
    resources:
        gpu_share=SCORE_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.evaluate {params.overrides} > {log} 2>&1"


rule collect_compare:
    input:
        **compare_runs(),
    output:
        f"{RESULTS}/compare/tables/runs.csv",
    log:
        f"{RESULTS}/compare/logs/collect.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.collect --layout variant --study compare --results {params.results}"
        " --out {output} > {log} 2>&1"


rule tables_compare:
    input:
        rules.collect_compare.output,
    output:
        expand(f"{RESULTS}/compare/tables/{{name}}.{{ext}}", name=COMPARE_TABLES, ext=["csv", "md"]),
    log:
        f"{RESULTS}/compare/logs/tables.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.compare_tables --results {params.results} > {log} 2>&1"


rule figures_compare:
    input:
        rules.collect_compare.output,
    output:
        [report(f"{RESULTS}/compare/figures/{name}.png", category="Comparison",
                caption="report/figure.rst") for name in COMPARE_FIGURES],
        expand(f"{RESULTS}/compare/figures/{{name}}.{{ext}}", name=COMPARE_FIGURES,
               ext=["pdf", "csv"]),
    log:
        f"{RESULTS}/compare/logs/figures.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.compare_figures --results {params.results} > {log} 2>&1"


rule report_compare:
    input:
        rules.tables_compare.output,
        rules.figures_compare.output,
    output:
        md=report(f"{REPORTS}/compare.md", category="Comparison", caption="report/study.rst"),
        figures=directory(f"{REPORTS}/compare_figures"),
    log:
        f"{RESULTS}/compare/logs/report.log",
    params:
        results=lambda wildcards, input: str(Path(input[0]).parents[1]),
        scale=SCALE,
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.compare_report --results {params.results} --out {output.md} --scale {params.scale} > {log} 2>&1"

# MST study (methods/mst.md): each variant x seed pretrained on the same data and tokens (every
# sparse variant at the grid's FLOP budget), zero-shot scored, then one tidy table -> tables and
# figures -> reports/mst.md. Tokenizer and shards come from the shared data rules with study=mst.

MST_TABLES = ["mst_table_main", "mst_table_zeroshot", "mst_table_budget"]
MST_FIGURES = ["mst_fig_sparsity_schedule", "mst_fig_loss_curves", "mst_fig_flops_vs_ppl",
               "mst_fig_drop_grow"]


rule pretrain_mst:
    input:
        tokenizer=f"{RESULTS}/mst/prepare/tokenizer.json",
        shards=f"{RESULTS}/mst/prepare/shards/manifest.json",
        pin_source=mst_pin_source,
    output:
        f"{RESULTS}/mst/pretrain/{{variant}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/mst/logs/pretrain/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/mst/benchmarks/pretrain/{{variant}}_seed{{seed}}.tsv",
    params:
        launcher=config["launcher"],
        overrides=lambda wc, input, output: " ".join([
            common_overrides("pretrain", f"pretrain-{wc.variant}-seed{wc.seed}",
                             str(Path(output[0]).parent), "mst"),
            mst_variant_overrides(wc.variant),
            f"seed={wc.seed} tokenizer.path={input.tokenizer}",
            f"data.shards_dir={Path(input.shards).parent}",
        ]),
        # a pinned variant appends the knob its source run solved (read when the job starts)
        pin_dirs=lambda wc, input: " ".join(str(Path(p).parent) for p in input.pin_source),
    resources:
        gpu_share=TRAIN_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "pin=''; for run in {params.pin_dirs}; do pin=$(python -m sparselm.cli.pin_knob $run); done; "
        "{params.launcher} -m sparselm.cli.pretrain {params.overrides} $pin > {log} 2>&1"


rule eval_zeroshot_mst:
    input:
        f"{RESULTS}/mst/pretrain/{{variant}}_seed{{seed}}/metrics.json",
    output:
        f"{RESULTS}/mst/eval_zeroshot/{{variant}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/mst/logs/eval_zeroshot/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/mst/benchmarks/eval_zeroshot/{{variant}}_seed{{seed}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            job_overrides("evaluate", f"eval-zeroshot-{wc.variant}-seed{wc.seed}",
                          str(Path(output[0]).parent), "mst"),
            f"checkpoint={Path(input[0]).parent} seed={wc.seed}",
            f"'tasks=[{','.join(MST['zeroshot_tasks'])}]'",
            limit_override(MST["zeroshot_limit"]),
        ]),
    resources:
        gpu_share=SCORE_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.evaluate {params.overrides} > {log} 2>&1"


rule collect_mst:
    input:
        **mst_runs(),
    output:
        f"{RESULTS}/mst/tables/runs.csv",
    log:
        f"{RESULTS}/mst/logs/collect.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.collect --layout variant --results {params.results} --out {output}"
        " > {log} 2>&1"


rule tables_mst:
    input:
        rules.collect_mst.output,
    output:
        expand(f"{RESULTS}/mst/tables/{{name}}.{{ext}}", name=MST_TABLES, ext=["csv", "md"]),
    log:
        f"{RESULTS}/mst/logs/tables.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.mst_tables --results {params.results} > {log} 2>&1"


rule figures_mst:
    input:
        rules.collect_mst.output,
    output:
        [report(f"{RESULTS}/mst/figures/{name}.png", category="MST", caption="report/figure.rst")
         for name in MST_FIGURES],
        expand(f"{RESULTS}/mst/figures/{{name}}.{{ext}}", name=MST_FIGURES, ext=["pdf", "csv"]),
    log:
        f"{RESULTS}/mst/logs/figures.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.mst_figures --results {params.results} > {log} 2>&1"


rule report_mst:
    input:
        rules.tables_mst.output,
        rules.figures_mst.output,
    output:
        md=report(f"{REPORTS}/mst.md", category="MST", caption="report/study.rst"),
        figures=directory(f"{REPORTS}/mst_figures"),
    log:
        f"{RESULTS}/mst/logs/report.log",
    params:
        results=lambda wildcards, input: str(Path(input[0]).parents[1]),
        scale=SCALE,
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.mst_report --results {params.results} --out {output.md} --scale {params.scale} > {log} 2>&1"

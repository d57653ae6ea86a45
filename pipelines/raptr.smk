# RaPTr study (methods/raptr.md): each variant x seed pretrained on the same data and tokens,
# zero-shot scored, then one tidy table -> tables and figures -> reports/raptr.md.
# Tokenizer and shards come from the shared data rules with study=raptr.

RAPTR_TABLES = ["raptr_table_main", "raptr_table_zeroshot", "raptr_table_transitions"]
RAPTR_FIGURES = ["raptr_fig_loss_vs_flops", "raptr_fig_loss_vs_steps_transitions",
                 "raptr_fig_ablation", "raptr_fig_schedule"]


rule pretrain_raptr:
    input:
        tokenizer=f"{RESULTS}/raptr/prepare/tokenizer.json",
        shards=f"{RESULTS}/raptr/prepare/shards/manifest.json",
    output:
        f"{RESULTS}/raptr/pretrain/{{variant}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/raptr/logs/pretrain/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/raptr/benchmarks/pretrain/{{variant}}_seed{{seed}}.tsv",
    params:
        launcher=config["launcher"],
        overrides=lambda wc, input, output: " ".join([
            common_overrides("pretrain", f"pretrain-{wc.variant}-seed{wc.seed}",
                             str(Path(output[0]).parent), "raptr"),
            variant_overrides(wc.variant),
            f"seed={wc.seed} tokenizer.path={input.tokenizer}",
            f"data.shards_dir={Path(input.shards).parent}",
        ]),
    resources:
        gpu_share=TRAIN_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m sparselm.cli.pretrain {params.overrides} > {log} 2>&1"


rule eval_zeroshot_raptr:
    input:
        f"{RESULTS}/raptr/pretrain/{{variant}}_seed{{seed}}/metrics.json",
    output:
        f"{RESULTS}/raptr/eval_zeroshot/{{variant}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/raptr/logs/eval_zeroshot/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/raptr/benchmarks/eval_zeroshot/{{variant}}_seed{{seed}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            job_overrides("evaluate", f"eval-zeroshot-{wc.variant}-seed{wc.seed}",
                          str(Path(output[0]).parent), "raptr"),
            f"checkpoint={Path(input[0]).parent} seed={wc.seed}",
            f"'tasks=[{','.join(RAPTR['zeroshot_tasks'])}]'",
            limit_override(RAPTR["zeroshot_limit"]),
        ]),
    resources:
        gpu_share=SCORE_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.evaluate {params.overrides} > {log} 2>&1"


rule collect_raptr:
    input:
        **raptr_runs(),
    output:
        f"{RESULTS}/raptr/tables/runs.csv",
    log:
        f"{RESULTS}/raptr/logs/collect.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.collect --layout variant --results {params.results} --out {output}"
        " > {log} 2>&1"


rule tables_raptr:
    input:
        rules.collect_raptr.output,
    output:
        expand(f"{RESULTS}/raptr/tables/{{name}}.{{ext}}", name=RAPTR_TABLES, ext=["csv", "md"]),
    log:
        f"{RESULTS}/raptr/logs/tables.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.raptr_tables --results {params.results} > {log} 2>&1"


rule figures_raptr:
    input:
        rules.collect_raptr.output,
    output:
        [report(f"{RESULTS}/raptr/figures/{name}.png", category="RaPTr", caption="report/figure.rst")
         for name in RAPTR_FIGURES],
        expand(f"{RESULTS}/raptr/figures/{{name}}.{{ext}}", name=RAPTR_FIGURES, ext=["pdf", "csv"]),
    log:
        f"{RESULTS}/raptr/logs/figures.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.raptr_figures --results {params.results} > {log} 2>&1"


rule report_raptr:
    input:
        rules.tables_raptr.output,
        rules.figures_raptr.output,
    output:
        md=report(f"{REPORTS}/raptr.md", category="RaPTr", caption="report/study.rst"),
        figures=directory(f"{REPORTS}/raptr_figures"),
    log:
        f"{RESULTS}/raptr/logs/report.log",
    params:
        results=lambda wildcards, input: str(Path(input[0]).parents[1]),
        scale=SCALE,
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.raptr_report --results {params.results} --out {output.md} --scale {params.scale} > {log} 2>&1"

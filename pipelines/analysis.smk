# Analysis: results files -> one tidy table -> study tables and figures -> the study report.

SPDF_TABLES = ["spdf_table_main", "spdf_table_zeroshot", "spdf_table_rel_drop"]
SPDF_FIGURES = ["spdf_fig_flops_vs_metric", "spdf_fig_rel_degradation",
                "spdf_fig_pretrain_curves", "spdf_fig_drop_heatmap"]


rule collect_spdf:
    input:
        **spdf_runs(),
    output:
        f"{RESULTS}/spdf/tables/runs.csv",
    log:
        f"{RESULTS}/spdf/logs/collect.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.collect --results {params.results} --out {output} > {log} 2>&1"


rule tables_spdf:
    input:
        rules.collect_spdf.output,
    output:
        expand(f"{RESULTS}/spdf/tables/{{name}}.{{ext}}", name=SPDF_TABLES, ext=["csv", "md"]),
    log:
        f"{RESULTS}/spdf/logs/tables.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.spdf_tables --results {params.results} > {log} 2>&1"


rule figures_spdf:
    input:
        rules.collect_spdf.output,
    output:
        [report(f"{RESULTS}/spdf/figures/{name}.png", category="SPDF", caption="report/figure.rst")
         for name in SPDF_FIGURES],
        expand(f"{RESULTS}/spdf/figures/{{name}}.{{ext}}", name=SPDF_FIGURES, ext=["pdf", "csv"]),
    log:
        f"{RESULTS}/spdf/logs/figures.log",
    params:
        results=lambda wildcards, output: str(Path(output[0]).parents[1]),
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.spdf_figures --results {params.results} > {log} 2>&1"


rule report_spdf:
    input:
        rules.tables_spdf.output,
        rules.figures_spdf.output,
    output:
        md=report(f"{REPORTS}/spdf.md", category="SPDF", caption="report/study.rst"),
        figures=directory(f"{REPORTS}/spdf_figures"),
    log:
        f"{RESULTS}/spdf/logs/report.log",
    params:
        results=lambda wildcards, input: str(Path(input[0]).parents[1]),
        scale=SCALE,
    conda:
        "../environment.yml"
    shell:
        "python -m analysis.spdf_report --results {params.results} --out {output.md} --scale {params.scale} > {log} 2>&1"

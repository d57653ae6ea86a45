# Analysis: results files -> one tidy table -> study tables and figures -> the study report.

SPDF_TABLES = ["spdf_table_main", "spdf_table_zeroshot", "spdf_table_rel_drop"]
SPDF_FIGURES = ["spdf_fig_flops_vs_metric", "spdf_fig_rel_degradation",
                "spdf_fig_pretrain_curves", "spdf_fig_drop_heatmap"]


def spdf_runs(study: str = "spdf") -> dict[str, list[str]]:
    """Every metrics.json the SPDF grid of this scale makes."""
    g = SPDF
    pre = expand(f"{RESULTS}/{study}/pretrain/s{{s}}_seed{{seed}}/metrics.json",
                 s=map(fmt, g["sparsities"]), seed=g["seeds"])
    zero = expand(f"{RESULTS}/{study}/eval_zeroshot/s{{s}}_seed{{seed}}/metrics.json",
                  s=map(fmt, g["sparsities"]), seed=g["seeds"])
    grid = dict(task=g["tasks"], s=list(map(fmt, g["sparsities"])),
                f=list(map(fmt, g["fractions"])), seed=g["seeds"])
    ft = expand(f"{RESULTS}/{study}/finetune/{{task}}/s{{s}}_f{{f}}_seed{{seed}}/metrics.json",
                **grid)
    nlg = expand(f"{RESULTS}/{study}/eval_nlg/{{task}}/s{{s}}_f{{f}}_seed{{seed}}/metrics.json",
                 **grid)
    return {"pretrain": pre, "eval_zeroshot": zero, "finetune": ft, "eval_nlg": nlg}


rule collect_spdf:
    input:
        **spdf_runs(),
    output:
        f"{RESULTS}/spdf/tables/runs.csv",
    log:
        f"{RESULTS}/spdf/logs/collect.log",
    shell:
        "{PY} -m analysis.collect --results {RESULTS}/spdf --out {output} > {log} 2>&1"


rule tables_spdf:
    input:
        rules.collect_spdf.output,
    output:
        expand(f"{RESULTS}/spdf/tables/{{name}}.{{ext}}", name=SPDF_TABLES, ext=["csv", "md"]),
    log:
        f"{RESULTS}/spdf/logs/tables.log",
    shell:
        "{PY} -m analysis.spdf_tables --results {RESULTS}/spdf > {log} 2>&1"


rule figures_spdf:
    input:
        rules.collect_spdf.output,
    output:
        [report(f"{RESULTS}/spdf/figures/{name}.png", category="SPDF", caption="report/figure.rst")
         for name in SPDF_FIGURES],
        expand(f"{RESULTS}/spdf/figures/{{name}}.{{ext}}", name=SPDF_FIGURES, ext=["pdf", "csv"]),
    log:
        f"{RESULTS}/spdf/logs/figures.log",
    shell:
        "{PY} -m analysis.spdf_figures --results {RESULTS}/spdf > {log} 2>&1"


rule report_spdf:
    input:
        rules.tables_spdf.output,
        rules.figures_spdf.output,
    output:
        report(f"{REPORTS}/spdf.md", category="SPDF", caption="report/study.rst"),
    log:
        f"{RESULTS}/spdf/logs/report.log",
    shell:
        "{PY} -m analysis.spdf_report --results {RESULTS}/spdf --out {output} > {log} 2>&1"

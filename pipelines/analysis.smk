# Analysis, the same four rules for every study (pipelines/studies/<study>.yaml declares its
# tables and figures): its runs -> one tidy table (collect_<study>) -> tables_<study> and
# figures_<study> -> report_<study> (<reports>/<study>.md), each one `analysis.build` command
# that reads the study as its declaration says. SquareHead's collect rule is its own
# (squarehead.smk): its inputs are the teachers too.

for _study, _declared in STUDIES.items():
    if _declared.layout != "squarehead":

        rule:
            name:
                f"collect_{_study}"
            input:
                **study_runs(_study),
            output:
                f"{RESULTS}/{_study}/tables/runs.csv",
            log:
                f"{RESULTS}/{_study}/logs/collect.log",
            params:
                results=lambda wildcards, output: str(Path(output[0]).parents[1]),
                study=_study,
            conda:
                "../environment.yml"
            shell:
                "python -m analysis.build runs --study {params.study} --results {params.results}"
                " --out {output} > {log} 2>&1"

    rule:
        name:
            f"tables_{_study}"
        input:
            f"{RESULTS}/{_study}/tables/runs.csv",
        output:
            expand(f"{RESULTS}/{_study}/tables/{{name}}.{{ext}}", name=_declared.tables,
                   ext=["csv", "md"]),
        log:
            f"{RESULTS}/{_study}/logs/tables.log",
        params:
            results=lambda wildcards, output: str(Path(output[0]).parents[1]),
            study=_study,
        conda:
            "../environment.yml"
        shell:
            "python -m analysis.build tables --study {params.study} --results {params.results}"
            " > {log} 2>&1"

    rule:
        name:
            f"figures_{_study}"
        input:
            getattr(rules, f"collect_{_study}").output,
        output:
            [report(f"{RESULTS}/{_study}/figures/{name}.png", category=_declared.label,
                    caption="report/figure.rst") for name in _declared.figures],
            expand(f"{RESULTS}/{_study}/figures/{{name}}.{{ext}}", name=_declared.figures,
                   ext=["pdf", "csv"]),
        log:
            f"{RESULTS}/{_study}/logs/figures.log",
        params:
            results=lambda wildcards, output: str(Path(output[0]).parents[1]),
            study=_study,
        conda:
            "../environment.yml"
        shell:
            "python -m analysis.build figures --study {params.study} --results {params.results}"
            " > {log} 2>&1"

    rule:
        name:
            f"report_{_study}"
        input:
            getattr(rules, f"tables_{_study}").output,
            getattr(rules, f"figures_{_study}").output,
        output:
            md=report(f"{REPORTS}/{_study}.md", category=_declared.label,
                      caption="report/study.rst"),
            figures=directory(f"{REPORTS}/{_study}_figures"),
        log:
            f"{RESULTS}/{_study}/logs/report.log",
        params:
            results=lambda wildcards, input: str(Path(input[0]).parents[1]),
            study=_study,
            options=f"--scale {SCALE} {report_options(_study)}".strip(),
        conda:
            "../environment.yml"
        shell:
            "python -m analysis.build report --study {params.study} --results {params.results}"
            " --out {output.md} {params.options} > {log} 2>&1"

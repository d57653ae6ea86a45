# Entry point of the study pipeline: includes the rule files and names the targets. No logic.
#   snakemake --cores all reproduce_spdf [--config scale=smoke data_dir=../shared/data]
#   snakemake --cores all reproduce_<study>: raptr, squarehead, mst, compare, or any other
#   study declared in pipelines/studies/


configfile: "pipelines/config/default.yaml"


report: "pipelines/report/workflow.rst"


include: "pipelines/common.smk"
include: "pipelines/data.smk"
include: "pipelines/pretrain.smk"
include: "pipelines/finetune.smk"
include: "pipelines/evaluate.smk"
include: "pipelines/squarehead.smk"
include: "pipelines/analysis.smk"


# reproduce_<study> for every declared study (pipelines/studies/<study>.yaml); SPDF's is the
# default target
for _study, _declared in STUDIES.items():

    rule:
        f"""{_declared.title}: every run of the grid, its tables, figures and report."""
        name:
            f"reproduce_{_study}"
        default_target: _study == "spdf"
        input:
            getattr(rules, f"report_{_study}").output,


rule figures:
    """Regenerate every study's tables and figures from the results already there."""
    input:
        [getattr(rules, f"{kind}_{study}").output for study in STUDIES for kind in ("tables", "figures")],

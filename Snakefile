# Entry point of the study pipeline: includes the rule files and names the targets. No logic.
#   snakemake --cores all reproduce_spdf [--config scale=smoke data_dir=../shared/data]
#   snakemake --cores all reproduce_raptr [--config ...]
#   snakemake --cores all reproduce_squarehead [--config ...]
#   snakemake --cores all reproduce_mst [--config ...]
#   snakemake --cores all reproduce_compare [--config ...]


configfile: "pipelines/config/default.yaml"


report: "pipelines/report/workflow.rst"


include: "pipelines/common.smk"
include: "pipelines/data.smk"
include: "pipelines/pretrain.smk"
include: "pipelines/finetune.smk"
include: "pipelines/evaluate.smk"
include: "pipelines/squarehead.smk"
include: "pipelines/analysis.smk"


rule reproduce_spdf:
    """The SPDF study: every run of the grid, its tables, figures and report."""
    default_target: True
    input:
        rules.report_spdf.output,


rule reproduce_raptr:
    """The RaPTr study: every variant and seed, zero-shot scores, tables, figures and report."""
    input:
        rules.report_raptr.output,


rule reproduce_squarehead:
    """The SquareHead study: prune the dense fine-tuned model, fine-tune each loss with the
    mask fixed, score, tables, figures and report."""
    input:
        rules.report_squarehead.output,


rule reproduce_mst:
    """The MST study: dense, static and RigL at MST's FLOPs, MST and its ablations, every seed,
    zero-shot scores, tables, figures and report."""
    input:
        rules.report_mst.output,


rule reproduce_compare:
    """The comparison study: dense, static sparse, RaPTr, RigL and MST on the same data, tokens
    per step, seeds and model, each at its own FLOP budget; one table, one loss-vs-FLOPs figure
    and the report."""
    input:
        rules.report_compare.output,


rule figures:
    """Regenerate every study's tables and figures from the results already there."""
    input:
        [getattr(rules, f"{kind}_{study}").output for study in STUDIES for kind in ("tables", "figures")],

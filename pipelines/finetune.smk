# Fine-tuning: dense, from each pretrained checkpoint, per task x dataset fraction.


rule finetune:
    input:
        pretrained=pretrained_run,
    output:
        f"{RESULTS}/{{study}}/finetune/{{task}}/s{{sparsity}}_f{{fraction}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/{{study}}/logs/finetune/{{task}}/s{{sparsity}}_f{{fraction}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/finetune/{{task}}/s{{sparsity}}_f{{fraction}}_seed{{seed}}.tsv",
    params:
        launcher=config["launcher"],
        overrides=lambda wc, input, output: " ".join([
            common_overrides("finetune",
                             f"finetune-{wc.task}-s{wc.sparsity}-f{wc.fraction}-seed{wc.seed}",
                             str(Path(output[0]).parent), wc.study),
            f"pretrained={Path(input.pretrained).parent} task={wc.task}",
            f"task.fraction={wc.fraction} seed={wc.seed}",
            finetune_overrides(wc.study),
        ]),
    resources:
        gpu_share=TRAIN_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m sparselm.cli.finetune {params.overrides} > {log} 2>&1"

# Pretraining: one job per sparsity x seed, through the shared Hydra entry point.


rule pretrain:
    input:
        tokenizer=f"{RESULTS}/{{study}}/prepare/tokenizer.json",
        shards=f"{RESULTS}/{{study}}/prepare/shards/manifest.json",
    output:
        f"{RESULTS}/{{study}}/pretrain/s{{sparsity}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/{{study}}/logs/pretrain/s{{sparsity}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/pretrain/s{{sparsity}}_seed{{seed}}.tsv",
    params:
        launcher=config["launcher"],
        overrides=lambda wc, input, output: " ".join([
            common_overrides("pretrain", f"pretrain-s{wc.sparsity}-seed{wc.seed}",
                             str(Path(output[0]).parent), wc.study),
            sparsity_overrides(wc.sparsity),
            f"seed={wc.seed} tokenizer.path={input.tokenizer}",
            f"data.shards_dir={Path(input.shards).parent}",
        ]),
    resources:
        gpu_share=TRAIN_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "{params.launcher} -m sparselm.cli.pretrain {params.overrides} > {log} 2>&1"

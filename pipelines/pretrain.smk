# Pre-training: one job per run of a pre-training study's grid (s<sparsity>_seed<seed> for SPDF,
# <variant>_seed<seed> for the variant studies), through the shared Hydra entry point.


rule pretrain:
    input:
        tokenizer=f"{RESULTS}/{{study}}/prepare/tokenizer.json",
        shards=f"{RESULTS}/{{study}}/prepare/shards/manifest.json",
        pin_source=pin_source,
    output:
        f"{RESULTS}/{{study}}/pretrain/{{run}}/metrics.json",
    log:
        f"{RESULTS}/{{study}}/logs/pretrain/{{run}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/pretrain/{{run}}.tsv",
    wildcard_constraints:
        study="|".join(PRETRAINING),
    params:
        launcher=config["launcher"],
        overrides=lambda wc, input, output: " ".join([
            common_overrides("pretrain", job_name("pretrain", wc.run), str(Path(output[0]).parent),
                             wc.study),
            run_overrides(wc.study, wc.run),
            f"seed={split_run(wc.run)[1]} tokenizer.path={input.tokenizer}",
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

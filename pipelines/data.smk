# Data: train the tokenizer (fetching missing raw files, pinned + checksummed), tokenize the corpus.


rule train_tokenizer:
    """Fetches what is missing of a registered pretraining dataset first (the data directory is
    never a rule's output: Snakemake deletes outputs before a forced rerun)."""
    output:
        f"{RESULTS}/{{study}}/prepare/tokenizer.json",
    log:
        f"{RESULTS}/{{study}}/logs/train_tokenizer.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/train_tokenizer.tsv",
    params:
        overrides=lambda wc, output: (
            f"scale={SCALE} paths.data_dir={DATA} what=tokenizer tokenizer.path={output[0]} "
            f"hydra.run.dir={Path(output[0]).parent}"),
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.prepare {params.overrides} > {log} 2>&1"


rule tokenize_corpus:
    input:
        tokenizer=rules.train_tokenizer.output[0],
    output:
        f"{RESULTS}/{{study}}/prepare/shards/manifest.json",
    log:
        f"{RESULTS}/{{study}}/logs/tokenize_corpus.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/tokenize_corpus.tsv",
    params:
        overrides=lambda wc, input, output: (
            f"scale={SCALE} paths.data_dir={DATA} what=shards tokenizer.path={input.tokenizer} "
            f"data.shards_dir={Path(output[0]).parent} "
            f"hydra.run.dir={Path(output[0]).parent.parent}"),
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.prepare {params.overrides} > {log} 2>&1"

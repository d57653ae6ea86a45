# Data: fetch missing raw files (pinned + checksummed), train the tokenizer, tokenize the corpus.


for _name in DATASETS:  # one rule per dataset

    rule:
        """Fetches what is missing of the dataset; present files are left as they are.

        Its output is a marker under results/, never the raw files: Snakemake deletes a job's
        outputs before rerunning it, so a forced rerun (--forceall, --forcerun) must not be able
        to delete a user's dataset.
        """
        name:
            f"download_{_name}"
        output:
            dataset_ready(_name),
        log:
            f"{RESULTS}/logs/download/{_name}.log",
        params:
            dataset=_name,
            data_dir=DATA,
        conda:
            "../environment.yml"
        shell:
            "python -m sparselm.data.download {params.dataset} --data-dir {params.data_dir} "
            "> {log} 2>&1 && touch {output}"


rule train_tokenizer:
    input:
        ancient([dataset_ready(n) for n in PRETRAIN_DATASETS]),
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

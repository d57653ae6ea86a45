# Scoring with lm-evaluation-harness: zero-shot on pretrained, NLG generation on fine-tuned.


rule eval_zeroshot:
    input:
        f"{RESULTS}/{{study}}/pretrain/{{run}}/metrics.json",
    output:
        f"{RESULTS}/{{study}}/eval_zeroshot/{{run}}/metrics.json",
    log:
        f"{RESULTS}/{{study}}/logs/eval_zeroshot/{{run}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/eval_zeroshot/{{run}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            job_overrides("evaluate", job_name("eval-zeroshot", wc.run),
                          str(Path(output[0]).parent), wc.study),
            f"checkpoint={Path(input[0]).parent} seed={split_run(wc.run)[1]}",
            f"'tasks=[{','.join(GRIDS[wc.study]['zeroshot_tasks'])}]'",
            limit_override(GRIDS[wc.study]["zeroshot_limit"]),
        ]),
    resources:
        gpu_share=SCORE_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.evaluate {params.overrides} > {log} 2>&1"


rule eval_nlg:
    input:
        f"{RESULTS}/{{study}}/finetune/{{task}}/s{{sparsity}}_f{{fraction}}_seed{{seed}}/metrics.json",
    output:
        f"{RESULTS}/{{study}}/eval_nlg/{{task}}/s{{sparsity}}_f{{fraction}}_seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/{{study}}/logs/eval_nlg/{{task}}/s{{sparsity}}_f{{fraction}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{study}}/benchmarks/eval_nlg/{{task}}/s{{sparsity}}_f{{fraction}}_seed{{seed}}.tsv",
    params:
        overrides=lambda wc, input, output: " ".join([
            job_overrides("evaluate",
                          f"eval-nlg-{wc.task}-s{wc.sparsity}-f{wc.fraction}-seed{wc.seed}",
                          str(Path(output[0]).parent), wc.study),
            nlg_overrides(GRIDS[wc.study], wc.task, input[0], wc.seed),
        ]),
    resources:
        gpu_share=SCORE_GPU_SHARE,
    conda:
        "../environment.yml"
    shell:
        "python -m sparselm.cli.evaluate {params.overrides} > {log} 2>&1"

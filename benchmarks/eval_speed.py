"""NLG decoding speed: the old one-request, cache-free decoder vs the batched HF path.

    python benchmarks/eval_speed.py --checkpoint <fine-tuned E2E run> [--limit 50]
        [--threads 1] [--batch-size 8] [--beams 1 4 10] [--old-beams 1 4 10]
        [--device cpu|cuda] [--out benchmarks/results/eval_speed_cpu.md]
    python benchmarks/eval_speed.py --cuda-row [--batch-size 32]   # GPT-2 Small, beam 10
    python benchmarks/eval_speed.py --checkpoint <run> --loglikelihood  # scoring, batch 1 vs N

Both paths decode the same E2E test inputs with the task's settings (until "\\n", at most 64
new tokens, length penalty 0.9, no repeated 4-grams) and a given beam count; the table gives
examples/s, the speed-up and each path's corpus BLEU on those inputs. The old decoder is the
code of ``sparselm/evaluation/generation.py`` at commit ``OLD_COMMIT``, read from git history
(``git show``) and driven the way ``SparselmLM.generate`` drove it then, so this benchmark
measures it even though the library no longer has it.

``--cuda-row`` times a randomly initialised GPT-2 Small (no weights offline; it rarely emits
EOS, so every request runs its full 64 tokens: a worst case) at beam 10 and reports the full
test-set time each NLG task implies.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "6e14046"  # last commit with the hand-written decoder
OLD_PATH = "src/sparselm/evaluation/generation.py"
E2E_KWARGS = {"until": ["\n"], "max_gen_toks": 64, "length_penalty": 0.9, "no_repeat_ngram_size": 4}
# test inputs per task (the sparselm_* NLG test splits)
FULL_TEST = {"sparselm_e2e_nlg": 630, "sparselm_webnlg": 1862, "sparselm_dart": 4159}


def old_decoder(commit: str = OLD_COMMIT) -> types.ModuleType:
    """The hand-written decoder module as it was at ``commit``."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{OLD_PATH}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("old_generation")
    exec(compile(source, f"{commit}:{OLD_PATH}", "exec"), module.__dict__)
    return module


def old_generate(old: types.ModuleType, lm: Any, context: str, settings: Any) -> str:
    """``SparselmLM.generate`` as of ``OLD_COMMIT``: one request, no cache, sliding window."""
    from sparselm.evaluation.lm import cut_at_stop

    prompt = lm.tok_encode(context) or [lm.prefix_token_id]

    def stop_fn(ids: list[int]) -> bool:
        text = lm.tok.decode(ids)
        return any(stop and stop in text for stop in settings.until)

    stop = stop_fn if settings.until else None
    if settings.num_beams == 1:
        ids = old.greedy_decode(
            lm.model, prompt, settings.max_gen_toks, lm.eot_token_id, stop,
            settings.no_repeat_ngram_size, window=lm.max_length,
        )  # fmt: skip
    else:
        ids = old.beam_search(
            lm.model, prompt, settings.num_beams, settings.max_gen_toks, settings.length_penalty,
            settings.no_repeat_ngram_size, lm.eot_token_id, stop, window=lm.max_length,
        )  # fmt: skip
    return cut_at_stop(lm.tok.decode(ids), settings.until)


def e2e_inputs(limit: int) -> tuple[list[str], list[list[str]]]:
    from sparselm.evaluation.tasks.utils import load_e2e_nlg

    test = load_e2e_nlg()["test"]
    test = test.select(range(min(limit, len(test))))
    return list(test["prompt"]), [list(r) for r in test["references"]]


def new_generate(lm: Any, prompts: list[str], gen_kwargs: dict) -> list[str]:
    """The library path: lm-eval requests through ``SparselmLM.generate_until``."""
    from lm_eval.api.instance import Instance

    reqs = [
        Instance("generate_until", doc={}, arguments=(p, gen_kwargs), idx=0, metadata=("e2e", i, 1))
        for i, p in enumerate(prompts)
    ]
    return lm.generate_until(reqs, disable_tqdm=True)


def bleu(outputs: list[str], refs: list[list[str]]) -> float:
    from sparselm.evaluation.tasks.nlg_metrics import corpus_bleu

    return corpus_bleu([(r, o.strip()) for r, o in zip(refs, outputs, strict=True)])


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def compare(args: argparse.Namespace) -> list[str]:
    from sparselm.evaluation.lm import SparselmLM, parse_gen_kwargs

    lm = SparselmLM(args.checkpoint, device=args.device, batch_size=args.batch_size)
    prompts, refs = e2e_inputs(args.limit)
    old = old_decoder(args.old_commit)
    rows = [
        "| beams | old ex/s | new ex/s | speed-up | old BLEU | new BLEU | same strings |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for beams in args.beams:
        kwargs = E2E_KWARGS | {"num_beams": beams}
        settings = parse_gen_kwargs(kwargs, 64)
        new_out, new_s = timed(lambda k=kwargs: new_generate(lm, prompts, k))
        n = len(prompts)
        if beams in args.old_beams:
            old_out, old_s = timed(
                lambda s=settings: [old_generate(old, lm, p, s) for p in prompts]
            )
            same = sum(a == b for a, b in zip(old_out, new_out, strict=True))
            rows.append(
                f"| {beams} | {n / old_s:.2f} | {n / new_s:.2f} | {old_s / new_s:.1f}x "
                f"| {bleu(old_out, refs):.2f} | {bleu(new_out, refs):.2f} | {same}/{n} |"
            )
        else:
            rows.append(
                f"| {beams} | - | {n / new_s:.2f} | - | - | {bleu(new_out, refs):.2f} | - |"
            )
        print(rows[-1], flush=True)
    return rows


def loglikelihood_rows(args: argparse.Namespace) -> list[str]:
    """Log-likelihood requests (E2E prompt -> first reference) at batch 1 and ``--batch-size``."""
    from lm_eval.api.instance import Instance

    from sparselm.evaluation.lm import SparselmLM

    prompts, refs = e2e_inputs(args.limit)
    reqs = [
        Instance("loglikelihood", doc={}, arguments=(p, " " + r[0]), idx=0, metadata=("e2e", i, 1))
        for i, (p, r) in enumerate(zip(prompts, refs, strict=True))
    ]
    rows = ["| batch | requests/s |", "|---:|---:|"]
    for batch in (1, args.batch_size):
        lm = SparselmLM(args.checkpoint, device=args.device, batch_size=batch)
        lm.loglikelihood(reqs[:8], disable_tqdm=True)  # warm-up
        _, seconds = timed(lambda lm=lm: lm.loglikelihood(reqs, disable_tqdm=True))
        rows.append(f"| {batch} | {len(reqs) / seconds:.1f} |")
        print(rows[-1], flush=True)
    return rows


def cuda_row(args: argparse.Namespace) -> list[str]:
    """GPT-2 Small (random weights), beam 10: examples/s and implied full test-set times."""
    from sparselm.evaluation.generation import GenSettings, generate_batch
    from sparselm.flops import load_model_config
    from sparselm.hf_export import to_hf_gpt2
    from sparselm.model import GPT, GPTConfig

    if not torch.cuda.is_available():
        return ["(CUDA row skipped: no CUDA device)"]
    torch.manual_seed(0)
    fields = load_model_config("gpt2_small") | {"vocab_size": 50304}
    cfg = GPTConfig(**{k: v for k, v in fields.items() if k in GPTConfig.__dataclass_fields__})
    hf = to_hf_gpt2(GPT(cfg), eos_token_id=0).to("cuda", torch.bfloat16)
    settings = GenSettings(("\n",), 64, 10, 0.9, 4)
    prompt_len, n = 120, args.batch_size * 2
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, cfg.vocab_size, (n, prompt_len), generator=gen).tolist()
    tok = _byte_tokenizer()
    chunks = [prompts[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    generate_batch(hf, tok, chunks[0], settings, 0, cfg.block_size)  # warm-up
    torch.cuda.synchronize()
    _, seconds = timed(
        lambda: [generate_batch(hf, tok, c, settings, 0, cfg.block_size) for c in chunks]
    )
    rate = n / seconds
    rows = [
        f"GPT-2 Small, bf16, beam 10, batch {args.batch_size}, prompts of {prompt_len} tokens, "
        f"64 new tokens each: **{rate:.1f} examples/s** ({torch.cuda.get_device_name()})",
        "",
        "| task | test inputs | implied time |",
        "|---|---:|---:|",
    ]
    rows += [f"| {t} | {k} | {k / rate / 60:.1f} min |" for t, k in FULL_TEST.items()]
    return rows


def _byte_tokenizer() -> Any:
    from tokenizers import Tokenizer, models

    return Tokenizer(models.BPE())  # decodes ids to "" (no stop ever fires): worst case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--old-beams", type=int, nargs="*", default=[1, 4, 10])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--cuda-row", action="store_true")
    parser.add_argument("--loglikelihood", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cuda_row:
        body = cuda_row(args)
    elif args.checkpoint is None:
        parser.error("--checkpoint is required (or --cuda-row)")
    elif args.loglikelihood:
        body = loglikelihood_rows(args)
    else:
        body = compare(args)
    header = [
        "# NLG decoding speed: old decoder vs batched HF generate",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`  ",
        f"Machine: {platform.machine()}, {platform.processor() or platform.system()}, "
        f"{os.cpu_count()} cores (shared), torch {torch.__version__}, "
        f"{args.threads} thread(s), batch {args.batch_size}, device {args.device}",
        "",
    ]
    text = "\n".join(header + body) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""lm-evaluation-harness adapter for sparselm checkpoints, registered as model "sparselm".

    import sparselm.evaluation.lm  # registers the name
    lm_eval.simple_evaluate(model="sparselm", model_args="pretrained=<run or ckpt dir>", ...)

``pretrained`` is one of our run or checkpoint folders, or a Hugging Face causal LM folder
(``config.json`` + ``tokenizer.json``, e.g. a SquareHead ``hf_model/``). Log-likelihoods are fp32
and left-truncate the context to ``max_length`` (default: the model's window); a request whose
continuation alone is longer is scored on its last ``max_length`` tokens and counted in
``truncated`` (per task). Rolling log-likelihoods use lm-eval's own disjoint windows.
Generation (``generation.py``) decodes batches with ``transformers`` ``generate`` (KV cache;
fp32 on CPU, bf16 on CUDA) with the task's ``generation_kwargs`` (greedy or beam search).
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from sparselm.errors import ConfigError
from sparselm.evaluation.generation import GenSettings, clamp_positions, fit_prompt, generate_batch
from sparselm.loading import load_trained, weights_sha256
from sparselm.tokenizer import eot_id, load_tokenizer

DEFAULT_MAX_GEN_TOKS = 256
# Sampling knobs that mean nothing when do_sample is false (HF ignores them the same way).
IGNORED_WHEN_GREEDY = ("temperature", "top_p", "top_k")
GEN_KEYS = (
    "until",
    "max_gen_toks",
    "do_sample",
    "num_beams",
    "length_penalty",
    "no_repeat_ngram_size",
    *IGNORED_WHEN_GREEDY,
)

# ((context, continuation) or None, context ids, continuation ids), as TemplateLM builds them
TokenRequest = tuple[Any, list[int], list[int]]


def parse_gen_kwargs(kwargs: dict[str, Any] | None, default_max_gen_toks: int) -> GenSettings:
    """lm-eval ``generation_kwargs`` -> settings; sampling and unknown keys are refused."""
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(GEN_KEYS))
    if unknown:
        raise ConfigError(
            f"generation_kwargs.{unknown[0]}: not supported; allowed: {', '.join(GEN_KEYS)}"
        )
    if kwargs.get("do_sample"):
        raise ConfigError(
            "generation_kwargs.do_sample=true: only deterministic decoding "
            "(greedy or beam search) is supported"
        )
    until = kwargs.get("until") or []
    until = (until,) if isinstance(until, str) else tuple(until)
    given = {k: v for k, v in kwargs.items() if v is not None}
    settings = GenSettings(
        until=until,
        max_gen_toks=int(given.get("max_gen_toks", default_max_gen_toks)),
        num_beams=int(given.get("num_beams", 1)),
        length_penalty=float(given.get("length_penalty", 1.0)),
        no_repeat_ngram_size=int(given.get("no_repeat_ngram_size", 0)),
    )
    if settings.num_beams < 1 or settings.max_gen_toks < 1:
        raise ConfigError(
            f"generation_kwargs: num_beams={settings.num_beams} and "
            f"max_gen_toks={settings.max_gen_toks} must be >= 1"
        )
    return settings


def cut_at_stop(text: str, until: tuple[str, ...]) -> str:
    """Text before the first occurrence of any stop string."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def _hf_copy(model: Any, eos: int, device: torch.device, dtype: torch.dtype) -> Any:
    """Our GPT as an exact ``GPT2LMHeadModel`` (``to_hf_gpt2``), for ``generate``."""
    from sparselm.hf_export import to_hf_gpt2

    return to_hf_gpt2(model, eos_token_id=eos).to(device=device, dtype=dtype)


def _resolve_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} requested but CUDA is not available; use device=cpu")
    return str(device)


@register_model("sparselm")
class SparselmLM(TemplateLM):
    """A sparselm GPT and its BPE tokenizer behind lm-eval's LM interface."""

    def __init__(
        self,
        pretrained: str | Path,
        device: str | None = "auto",
        batch_size: int | str = 16,
        max_length: int | str | None = None,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        max_batch_size: int | None = None,  # passed by simple_evaluate; batches are fixed here
    ) -> None:
        super().__init__()
        try:
            self.batch_size = int(batch_size)
            self.max_gen_toks = int(max_gen_toks)
        except (TypeError, ValueError):
            raise ConfigError(
                f"batch_size={batch_size!r} and max_gen_toks={max_gen_toks!r} must be integers"
            ) from None
        self._device = torch.device(_resolve_device(device))
        # generation runs in bf16 on CUDA (fp32 on CPU) through a transformers model
        gen_dtype = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        if (Path(pretrained) / "config.json").is_file():
            self._load_hf(Path(pretrained), gen_dtype)
        else:
            self.model, self.tok, self.ckpt_dir = load_trained(Path(pretrained), self._device)
            self._eot = eot_id(self.tok)
            self.gen_model = _hf_copy(self.model, self._eot, self._device, gen_dtype)
        block = self.block_size
        self.max_length = block if max_length in (None, "") else int(max_length)
        if not 2 <= self.max_length <= block or self.batch_size < 1:
            raise ConfigError(
                f"max_length={self.max_length} must be in [2, block_size={block}] "
                f"and batch_size={self.batch_size} >= 1"
            )
        clamp_positions(self.gen_model, block)
        self.truncated: Counter[str] = Counter()  # requests cut to fit the window, per task

    def _load_hf(self, folder: Path, gen_dtype: torch.dtype) -> None:
        """A Hugging Face causal LM folder: scored fp32, generated in ``gen_dtype``."""
        from sparselm.hf_causal import HFCausalLM

        if not (folder / "tokenizer.json").is_file():
            raise ConfigError(f"pretrained={folder}: has no tokenizer.json (a fast tokenizer)")
        self.model = HFCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        self.model.to(self._device).eval()
        self.tok, self.ckpt_dir = load_tokenizer(folder / "tokenizer.json"), folder
        cfg = self.model.hf.config
        eos = cfg.eos_token_id[0] if isinstance(cfg.eos_token_id, list) else cfg.eos_token_id
        if eos is None:
            raise ConfigError(f"pretrained={folder}: config.json has no eos_token_id")
        self._eot = int(eos)
        self.gen_model = self.model.hf
        if gen_dtype != torch.float32:  # a separate low-precision copy for generation
            self.gen_model = HFCausalLM.from_pretrained(str(folder), dtype=gen_dtype).hf
            self.gen_model.to(self._device).eval()

    @property
    def block_size(self) -> int:
        cfg = self.model.hf.config if hasattr(self.model, "hf") else self.model.config
        return int(
            getattr(cfg, "block_size", None)
            or getattr(cfg, "n_positions", None)
            or cfg.max_position_embeddings
        )

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @cached_property
    def weights_sha256(self) -> str:
        return weights_sha256(self.ckpt_dir)

    def get_model_info(self) -> dict[str, Any]:
        """Merged by simple_evaluate into results["config"]."""
        return {
            "checkpoint": str(self.ckpt_dir),
            "weights_sha256": self.weights_sha256,
            "max_length": self.max_length,
            "block_size": self.block_size,
        }

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs: Any
    ) -> list[int]:
        # No BOS is ever added: the byte-level BPE has no post-processor, and "<|endoftext|>"
        # written in the text (our NLG prompts start with it) is encoded as the EOT token.
        return self.tok.encode(string).ids

    def tok_decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    # ---------------------------------------------------------------- log-likelihoods
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        """lm-eval's tokenisation, remembering each request's task to count truncations."""
        self._tasks = [getattr(req, "task_name", None) or "?" for req in requests]
        try:
            return super().loglikelihood(requests, disable_tqdm)
        finally:
            self._tasks = None

    def _loglikelihood_tokens(
        self,
        requests: list[TokenRequest],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        rows = [self._window(ctx, cont) for _, ctx, cont in requests]
        tasks = getattr(self, "_tasks", None)
        if tasks is not None and len(tasks) == len(requests):
            for task, (_, _, cont) in zip(tasks, requests, strict=True):
                # the continuation alone overflows the window: its start is scored blind
                self.truncated[task] += len(cont) > self.max_length
        # longest first: equal lengths share a batch and little padding is scored
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        size = override_bs or self.batch_size
        for start in tqdm(range(0, len(order), size), disable=disable_tqdm, desc="loglikelihood"):
            chunk = order[start : start + size]
            for i, result in zip(chunk, self._score_batch([rows[i] for i in chunk]), strict=True):
                out[i] = result
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], result)
        return out

    def _window(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int]]:
        """(model input, scored tokens): the last max_length + 1 tokens, context cut on the left."""
        cont = cont[-self.max_length :]
        whole = (ctx + cont)[-(self.max_length + 1) :]
        return whole[:-1], cont

    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        width = max(len(inp) for inp, _ in rows)
        idx = torch.zeros(len(rows), width, dtype=torch.long)
        for b, (inp, _) in enumerate(rows):
            idx[b, : len(inp)] = torch.tensor(inp)  # right padding: causal rows never see it
        logits = self.model(idx.to(self._device)).logits
        results = []
        for b, (inp, cont) in enumerate(rows):
            if not cont:
                results.append((0.0, True))
                continue
            n, end = len(cont), len(inp)
            logprobs = torch.log_softmax(logits[b, end - n : end].float(), dim=-1)
            target = torch.tensor(cont, device=logprobs.device)
            total = logprobs.gather(-1, target[:, None]).sum().item()
            greedy = bool((logprobs.argmax(dim=-1) == target).all())
            results.append((float(total), greedy))
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Sum log-likelihood of each string over disjoint windows of max_length tokens."""
        windows: list[TokenRequest] = []
        owner: list[int] = []
        for i, (string,) in enumerate(req.args for req in requests):
            pairs = lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for ctx, cont in map(lm_utils.make_disjoint_window, pairs):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(
            owner, self._loglikelihood_tokens(windows, disable_tqdm), strict=True
        ):
            totals[i] += ll
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---------------------------------------------------------------- generation
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Batches of ``batch_size`` requests with the same settings, longest prompt first."""
        jobs = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            settings = parse_gen_kwargs(gen_kwargs, self.max_gen_toks)
            ids = self.tok_encode(context) or [self.prefix_token_id]
            prompt, _ = fit_prompt(ids, self.max_length, settings.max_gen_toks)
            if len(prompt) < len(ids):
                self.truncated[getattr(req, "task_name", None) or "?"] += 1
            jobs.append((settings, -len(prompt), i, prompt))
        jobs.sort(key=lambda job: (repr(job[0]), job[1], job[2]))  # deterministic groups
        out: list[str] = [""] * len(requests)
        bar = tqdm(total=len(jobs), disable=disable_tqdm, desc="generate_until")
        for group in _batches(jobs, self.batch_size):
            settings = group[0][0]
            texts = self.generate_ids([job[3] for job in group], settings)
            for (_, _, i, _), text in zip(group, texts, strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
            bar.update(len(group))
        bar.close()
        return out

    def generate(self, context: str, settings: GenSettings) -> str:
        """Continuation of ``context`` up to EOS, a stop string or max_gen_toks."""
        ids = self.tok_encode(context) or [self.prefix_token_id]
        return self.generate_ids(
            [fit_prompt(ids, self.max_length, settings.max_gen_toks)[0]], settings
        )[0]

    def generate_ids(self, prompts: list[list[int]], settings: GenSettings) -> list[str]:
        """Texts generated for prompts that fit the window, as one batch, cut at stop strings."""
        gen = generate_batch(
            self.gen_model, self.tok, prompts, settings, self._eot, self.max_length
        )
        return [cut_at_stop(self.tok.decode(ids), settings.until) for ids in gen]


def _batches(jobs: list[tuple], size: int) -> list[list[tuple]]:
    """Consecutive chunks of at most ``size`` jobs that share their settings."""
    out: list[list[tuple]] = []
    for job in jobs:
        if out and len(out[-1]) < size and out[-1][0][0] == job[0]:
            out[-1].append(job)
        else:
            out.append([job])
    return out

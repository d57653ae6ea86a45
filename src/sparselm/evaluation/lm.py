"""lm-evaluation-harness adapter for sparselm checkpoints, registered as model "sparselm".

    import sparselm.evaluation.lm  # registers the name
    lm_eval.simple_evaluate(model="sparselm", model_args="pretrained=<run or ckpt dir>", ...)

Scoring is plain fp32 on whatever device is given. Log-likelihoods left-truncate the context to
``max_length`` (default: the model's ``block_size``); rolling log-likelihoods use lm-eval's own
disjoint windows; generation reads the task's ``generation_kwargs`` (greedy or beam search).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from sparselm.errors import ConfigError
from sparselm.evaluation.generation import beam_search, greedy_decode
from sparselm.loading import load_trained, weights_sha256
from sparselm.tokenizer import eot_id

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


@dataclass(frozen=True)
class GenSettings:
    until: tuple[str, ...]
    max_gen_toks: int
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0


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
        self.model, self.tok, self.ckpt_dir = load_trained(Path(pretrained), self._device)
        block = self.model.config.block_size
        self.max_length = block if max_length in (None, "") else int(max_length)
        if not 1 <= self.max_length <= block or self.batch_size < 1:
            raise ConfigError(
                f"max_length={self.max_length} must be in [1, block_size={block}] "
                f"and batch_size={self.batch_size} >= 1"
            )
        self._eot = eot_id(self.tok)

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
            "block_size": self.model.config.block_size,
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
    def _loglikelihood_tokens(
        self,
        requests: list[TokenRequest],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        rows = [self._window(ctx, cont) for _, ctx, cont in requests]
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
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="generate_until"):
            context, gen_kwargs = req.args
            text = self.generate(context, parse_gen_kwargs(gen_kwargs, self.max_gen_toks))
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    def generate(self, context: str, settings: GenSettings) -> str:
        """Continuation of ``context`` up to EOT, a stop string or max_gen_toks."""
        prompt = self.tok_encode(context) or [self.prefix_token_id]

        def stop_fn(ids: list[int]) -> bool:
            text = self.tok.decode(ids)
            return any(stop and stop in text for stop in settings.until)

        stop = stop_fn if settings.until else None
        if settings.num_beams == 1:
            ids = greedy_decode(
                self.model,
                prompt,
                settings.max_gen_toks,
                self._eot,
                stop,
                settings.no_repeat_ngram_size,
                window=self.max_length,
            )
        else:
            ids = beam_search(
                self.model,
                prompt,
                settings.num_beams,
                settings.max_gen_toks,
                settings.length_penalty,
                settings.no_repeat_ngram_size,
                self._eot,
                stop,
                window=self.max_length,
            )
        return cut_at_stop(self.tok.decode(ids), settings.until)

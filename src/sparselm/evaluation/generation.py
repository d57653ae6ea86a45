"""Batched, KV-cached decoding through ``transformers`` ``generate``, with our semantics.

Every generation request goes through :func:`generate_batch`: prompts are left-padded into
one batch and decoded by HF's greedy or beam search with ``use_cache=True``. Three pieces make
the result the one the task asks for, for every request alone, whatever its batch:

* :class:`GeneratedNgramBan` bans a token that would repeat an n-gram of the *generated* text
  (microsoft/LoRA's NLG convention). HF's ``no_repeat_ngram_size`` also counts the prompt, so
  a model could never copy a 4-gram of its input; it is not used.
* :class:`StopStrings` ends a row (a beam candidate in beam search) once its own generated text
  contains a stop string. It is evaluated per row of ``input_ids``, so each beam stops on its
  own text, not on row 0 of its request (lm-eval's ``MultiTokenEOSCriteria`` tracks one row per
  request, which makes beam outputs depend on the batch size).
* :class:`RowBudget` ends a row after its own ``max_new`` tokens: ``min(max_gen_toks,
  max_length - prompt length)``. Prompts are never cut to ``max_length - max_gen_toks`` (the
  way lm-eval's ``hf`` backend does); a prompt is left-cut only when it alone leaves no room
  for one new token.

The EOS id ends a hypothesis and is not returned; a stop string's tokens are returned (the
caller cuts the text at the stop string). Beam search is HF's: the ``num_beams`` best of
``2 * num_beams`` candidates run on, a finished hypothesis scores ``sum_logprob / gen_len **
length_penalty`` (``gen_len`` counts the EOS or stop token), and the search stops once no
running beam can beat the worst kept hypothesis (``early_stopping=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)


@dataclass(frozen=True)
class GenSettings:
    """Deterministic decoding settings of one request (parsed from lm-eval gen kwargs)."""

    until: tuple[str, ...]
    max_gen_toks: int
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0


class GeneratedNgramBan(LogitsProcessor):
    """Bans tokens that would repeat an n-gram of the tokens generated after ``prompt_len``."""

    def __init__(self, n: int, prompt_len: int) -> None:
        self.n, self.prompt_len = n, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len :]
        n, length = self.n, gen.shape[1]
        if n == 1:
            return scores.scatter(1, gen, float("-inf")) if length else scores
        if n <= 0 or length < n:  # no complete n-gram yet: nothing to repeat
            return scores
        windows = gen.unfold(1, n, 1)  # [rows, length - n + 1, n]
        prefix = gen[:, length - n + 1 :]  # the n - 1 tokens a new n-gram would start with
        hits = (windows[:, :, : n - 1] == prefix[:, None, :]).all(dim=-1)
        rows, pos = hits.nonzero(as_tuple=True)
        scores = scores.clone()
        scores[rows, windows[rows, pos, n - 1]] = float("-inf")
        return scores


class StopStrings(StoppingCriteria):
    """True for each row whose generated text (after ``prompt_len``) contains a stop string."""

    def __init__(self, tok: Tokenizer, until: Sequence[str], prompt_len: int) -> None:
        self.tok, self.until, self.prompt_len = tok, [s for s in until if s], prompt_len
        # a stop string newly completed by the last token lies within this many last tokens
        # (a token decodes to at least one byte); earlier ones would have stopped the row before
        self.tail = max((len(s.encode()) for s in self.until), default=0) + 1

    def __call__(
        self, input_ids: torch.LongTensor, scores: object, **kwargs: object
    ) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len :]
        tails = self.tok.decode_batch(gen[:, -self.tail :].tolist(), skip_special_tokens=False)
        done = [any(s in text for s in self.until) for text in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class RowBudget(StoppingCriteria):
    """True for each row that has generated its own ``max_new`` tokens (rows in beam order)."""

    def __init__(self, max_new: torch.Tensor, prompt_len: int) -> None:
        self.max_new, self.prompt_len = max_new, prompt_len

    def __call__(
        self, input_ids: torch.LongTensor, scores: object, **kwargs: object
    ) -> torch.Tensor:
        rows = input_ids.shape[0]
        per_row = self.max_new.to(input_ids.device).repeat_interleave(rows // len(self.max_new))
        return (input_ids.shape[1] - self.prompt_len) >= per_row


def fit_prompt(ids: list[int], max_length: int, max_gen_toks: int) -> tuple[list[int], int]:
    """(prompt, new-token budget): the prompt whole unless it alone fills the window."""
    ids = ids[-(max_length - 1) :]
    return ids, min(max_gen_toks, max_length - len(ids))


@torch.no_grad()
def generate_batch(
    model: nn.Module,
    tok: Tokenizer,
    prompts: Sequence[Sequence[int]],
    settings: GenSettings,
    eos_id: int,
    max_length: int,
) -> list[list[int]]:
    """Generated ids (no prompt, no EOS) of each prompt; ``model`` is an HF causal LM.

    Each prompt must already fit (see :func:`fit_prompt`): ``len(prompt) < max_length``.
    """
    device = next(model.parameters()).device
    budgets = [min(settings.max_gen_toks, max_length - len(p)) for p in prompts]
    if min(budgets) < 1:
        raise ValueError("every prompt must leave room for one new token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), eos_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):  # left padding: every row ends at the same column
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    processors = LogitsProcessorList()
    if settings.no_repeat_ngram_size > 0:
        processors.append(GeneratedNgramBan(settings.no_repeat_ngram_size, width))
    criteria = StoppingCriteriaList([RowBudget(torch.tensor(budgets), width)])
    if settings.until:
        criteria.append(StopStrings(tok, settings.until, width))
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        generation_config=_config(settings, eos_id, max(budgets)),
        logits_processor=processors,
        stopping_criteria=criteria,
    )
    return [_strip(row[width:].tolist(), eos_id) for row in out]


def _config(settings: GenSettings, eos_id: int, max_new_tokens: int) -> GenerationConfig:
    # everything explicit, so no default of the model's own generation config slips in
    beam = {"length_penalty": settings.length_penalty, "early_stopping": False}
    return GenerationConfig(
        do_sample=False,
        num_beams=settings.num_beams,
        **(beam if settings.num_beams > 1 else {}),
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        use_cache=True,
        num_return_sequences=1,
    )


def _strip(ids: list[int], eos_id: int) -> list[int]:
    """Generated ids up to the first EOS (finished rows are padded with it)."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def clamp_positions(model: nn.Module, n_positions: int) -> None:
    """Clamp GPT-2 position ids to the table: rows already finished keep being forwarded in a
    batch (their outputs are discarded) and may run past it; live rows stop by their budget."""
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    if isinstance(wpe, nn.Embedding):
        wpe.register_forward_pre_hook(lambda _, args: (args[0].clamp(max=n_positions - 1),))

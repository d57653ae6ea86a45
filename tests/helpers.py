"""Small shared builders for tests: a toy GPT and a deterministic batch source."""

from __future__ import annotations

import torch

from sparselm.model import GPT, GPTConfig


def toy_config(**overrides) -> GPTConfig:
    base = dict(vocab_size=64, n_layer=2, n_head=2, d_model=32, d_ff=64, block_size=16)
    return GPTConfig(**(base | overrides))


def toy_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(toy_config(**overrides))


class RandomTokens:
    """Batches that are a pure function of (step, micro): the protocol the loop relies on."""

    def __init__(self, vocab: int = 64, batch: int = 4, seq: int = 16, seed: int = 0) -> None:
        self.vocab, self.batch, self.seq, self.seed = vocab, batch, seq, seed

    def train_batch(self, step: int, micro: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + micro)
        t = torch.randint(0, self.vocab, (self.batch, self.seq + 1), generator=g)
        return t[:, :-1], t[:, 1:]

    def val_batches(self, n_batches: int):
        g = torch.Generator().manual_seed(999)
        out = []
        for _ in range(n_batches):
            t = torch.randint(0, self.vocab, (self.batch, self.seq + 1), generator=g)
            out.append((t[:, :-1], t[:, 1:]))
        return out


def save_tiny_run(run_dir, texts: list[str], block_size: int, seed: int = 0):
    """A run folder with a random 2-layer GPT and a BPE trained on ``texts``, as training
    leaves it (checkpoint + tokenizer.json), for tests of what reads trained models."""
    from sparselm.checkpoint import TrainingState, save_checkpoint
    from sparselm.tokenizer import save_tokenizer, train_bpe

    tok = train_bpe(texts, vocab_size=300)
    torch.manual_seed(seed)
    model = GPT(toy_config(vocab_size=tok.get_vocab_size(), block_size=block_size))
    save_checkpoint(run_dir, TrainingState(step=1), model, None, {}, "")
    save_tokenizer(tok, run_dir / "tokenizer.json")
    (run_dir / "metrics.json").write_text('{"steps": 1}\n')  # marks the run finished
    return run_dir

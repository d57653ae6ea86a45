"""The chunked LM head + cross-entropy equals the plain one and never builds the full logits."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import RandomTokens, toy_model
from torch.utils._python_dispatch import TorchDispatchMode

from sparselm.errors import ConfigError
from sparselm.hooks import TrainHook
from sparselm.lm_head_loss import ChunkedHeadLoss, LabelledRowsHeadLoss
from sparselm.model import lm_loss
from sparselm.optim import OptimConfig, build_adamw
from sparselm.train import TrainConfig, TrainRun, open_loop, train


def _inputs(n: int = 40, d: int = 16, vocab: int = 50, ignored: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(vocab, d, generator=g, requires_grad=True)
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[torch.randperm(n, generator=g)[:ignored]] = -100
    return hidden, weight, labels


def _reference(hidden, weight, labels):
    loss = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=-100)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    return loss, gh, gw


@pytest.mark.parametrize("chunk", [1, 7, 40, 1000])
def test_loss_and_gradients_equal_the_full_logits_cross_entropy(chunk):
    hidden, weight, labels = _inputs()
    loss = ChunkedHeadLoss(chunk)(hidden, weight, labels)
    gh, gw = torch.autograd.grad(3.0 * loss, (hidden, weight))  # backward scales by grad_out
    ref, ref_gh, ref_gw = _reference(hidden, weight, labels)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gh, 3.0 * ref_gh, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gw, 3.0 * ref_gw, atol=1e-6, rtol=1e-5)


def test_labelled_rows_loss_and_gradients_equal_the_full_logits_cross_entropy():
    """The head on labelled rows only: same loss and gradients (ignored rows get exactly zero
    hidden-state gradient); in fp64 the only difference is summation order."""
    hidden, weight, labels = (
        t.detach().double() if t.is_floating_point() else t for t in _inputs(ignored=25)
    )
    hidden.requires_grad_(), weight.requires_grad_()
    loss = LabelledRowsHeadLoss()(hidden, weight, labels)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    ref, ref_gh, ref_gw = _reference(hidden, weight, labels)
    torch.testing.assert_close(loss, ref, atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(gh, ref_gh, atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(gw, ref_gw, atol=1e-13, rtol=1e-12)
    assert torch.all(gh[labels == -100] == 0)
    assert math.isnan(float(LabelledRowsHeadLoss()(hidden, weight, torch.full_like(labels, -100))))


def test_losses_upcast_to_at_least_fp32_and_keep_fp64():
    """bf16 logits get an fp32 softmax; fp64 stays fp64 end to end (the distributed equality
    tests rely on it), so the chunked loss matches the plain one to fp64 rounding."""
    hidden, weight, labels = (
        t.detach().double() if t.is_floating_point() else t for t in _inputs()
    )
    hidden.requires_grad_(), weight.requires_grad_()
    loss = ChunkedHeadLoss(7)(hidden, weight, labels)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    ref, ref_gh, ref_gw = _reference(hidden, weight, labels)
    assert loss.dtype == gh.dtype == gw.dtype == torch.float64
    torch.testing.assert_close(loss, ref, atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(gw, ref_gw, atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(gh, ref_gh, atol=1e-13, rtol=1e-12)
    assert lm_loss((hidden @ weight.t()).unsqueeze(0), labels.unsqueeze(0)).dtype == torch.float64
    bf16 = lm_loss(torch.randn(1, 4, 10, dtype=torch.bfloat16), torch.zeros(1, 4, dtype=torch.long))
    assert bf16.dtype == torch.float32


@pytest.mark.slow
def test_compiled_chunk_kernel_equals_eager():
    hidden, weight, labels = _inputs()
    loss = ChunkedHeadLoss(16, compiled=True)(hidden, weight, labels)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    ref, ref_gh, ref_gw = _reference(hidden, weight, labels)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(gh, ref_gh)
    torch.testing.assert_close(gw, ref_gw)


def test_bf16_autocast_matches_autocast_reference():
    hidden, weight, labels = _inputs(n=64, d=32, vocab=100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ChunkedHeadLoss(16)(hidden, weight, labels)
        ref = lm_loss(F.linear(hidden, weight), labels)
    gh, gw = torch.autograd.grad(loss, (hidden, weight))
    ref_gh, ref_gw = torch.autograd.grad(ref, (hidden, weight))
    assert gh.dtype == hidden.dtype and gw.dtype == weight.dtype
    torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gh, ref_gh, atol=2e-3, rtol=2e-2)
    torch.testing.assert_close(gw, ref_gw, atol=2e-3, rtol=2e-2)


def test_without_grad_only_the_loss_is_computed():
    hidden, weight, labels = _inputs()
    with torch.no_grad():
        loss = ChunkedHeadLoss(8)(hidden, weight, labels)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, _reference(hidden, weight, labels)[0])


def test_all_labels_ignored_gives_nan_like_cross_entropy():
    hidden, weight, labels = _inputs()
    labels[:] = -100
    with torch.no_grad():
        assert math.isnan(float(ChunkedHeadLoss(8)(hidden, weight, labels)))
        assert math.isnan(float(F.cross_entropy(hidden @ weight.t(), labels, ignore_index=-100)))


def test_bad_chunk_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^train.loss_chunk=0 must be >= 1"):
        ChunkedHeadLoss(0)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_the_full_logits_are_never_allocated():
    model = toy_model(vocab_size=512)
    x = torch.randint(0, 512, (8, 16))
    n_logits = x.numel() * 512
    plain, chunked = _LargestTensor(), _LargestTensor()
    with plain:
        lm_loss(model(x).logits, x).backward()
    with chunked:
        model(x, labels=x, head_loss=ChunkedHeadLoss(8)).loss.backward()
    assert plain.largest >= n_logits
    # the head weight (and its gradient) is now the largest tensor: 4x fewer than the logits
    assert chunked.largest == model.wte.weight.numel() <= n_logits // 4


def test_model_loss_equals_loss_of_its_logits():
    model = toy_model().eval()
    x = torch.randint(0, 64, (2, 16))
    y = torch.randint(0, 64, (2, 16))
    out = model(x, labels=y, head_loss=ChunkedHeadLoss(5))
    assert out.logits is None
    torch.testing.assert_close(out.loss, lm_loss(model(x).logits, y))


def _run(out, loss_chunk: int, hooks=()) -> TrainRun:
    model = toy_model(seed=3)
    optim = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=1)
    cfg = TrainConfig(steps=4, grad_accum=2, eval_every=2, eval_batches=2, loss_chunk=loss_chunk)
    return TrainRun(model, build_adamw(model, optim), RandomTokens(), cfg, optim, out, list(hooks))


def _train(tmp_path, name: str, loss_chunk: int, hooks=()) -> list[dict]:
    out = tmp_path / name
    train(_run(out, loss_chunk, hooks))
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_training_with_chunked_loss_follows_the_plain_run(tmp_path):
    plain = _train(tmp_path, "plain", 0)
    chunked = _train(tmp_path, "chunked", 24)
    assert len(plain) == len(chunked) == 4
    for a, b in zip(plain, chunked, strict=True):
        for key in ("train_loss", "grad_norm", "val_loss"):
            assert (key in a) == (key in b)
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a["step"])


class _ReadsLogits(TrainHook):
    name = "reads_logits"

    def extra_losses(self, x, y, output):
        return {"loss_logit_l2": 1e-3 * output.logits.float().pow(2).mean()}


def test_the_loop_uses_the_chunked_loss_only_where_it_computes_the_same_loss(tmp_path):
    assert open_loop(_run(tmp_path / "a", 0)).head_loss is None
    assert open_loop(_run(tmp_path / "b", 24)).head_loss == ChunkedHeadLoss(24)
    assert open_loop(_run(tmp_path / "c", 24, [_ReadsLogits()])).head_loss is None
    with pytest.raises(ConfigError, match=r"^train.loss_chunk=-1 must be >= 0"):
        open_loop(_run(tmp_path / "d", -1))


def test_a_hook_that_reads_the_logits_gets_them_with_loss_chunk_set(tmp_path):
    plain = _train(tmp_path, "plain", 0, [_ReadsLogits()])
    chunked = _train(tmp_path, "chunked", 24, [_ReadsLogits()])  # falls back to full logits
    assert [r["loss_total"] for r in chunked] == [r["loss_total"] for r in plain]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_compiled_chunks_match_the_full_logits_in_less_memory():
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(8192, 768, device="cuda", generator=g).requires_grad_()
    weight = (0.02 * torch.randn(50304, 768, device="cuda", generator=g)).requires_grad_()
    labels = torch.randint(0, 50304, (8192,), device="cuda", generator=g)

    def run(loss_fn):
        hidden.grad = weight.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn()
        loss.backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        return float(loss), hidden.grad.clone(), weight.grad.clone(), peak

    chunked = ChunkedHeadLoss(2048, compiled=True)
    full = run(lambda: lm_loss(F.linear(hidden, weight), labels))
    ours = run(lambda: chunked(hidden, weight, labels))
    assert ours[0] == pytest.approx(full[0], rel=1e-3)
    torch.testing.assert_close(ours[1], full[1], atol=1e-4, rtol=5e-2)
    torch.testing.assert_close(ours[2], full[2], atol=1e-4, rtol=5e-2)
    assert ours[3] < 0.5 * full[3]  # 8192 x 50304 logits: 0.8 GB bf16, 1.6 GB in fp32

"""The hand-written CPU step computes what autograd computes, and is used exactly where it applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanecho_core import cpu_engine
from nanecho_core.cpu_engine import Products, eval_loss, forward_backward, onednn_available, resolve_engine
from nanecho_core.data import load_splits
from nanecho_core.errors import NanechoError
from nanecho_core.model import GPT, GPTConfig
from nanecho_core.presets import resolve_config
from nanecho_core.trainer import Trainer
from tests.trainer_support import TINY_OVERRIDES, write_corpus

BACKENDS = [
    pytest.param(False, id="torch.mm"),
    pytest.param(
        True,
        id="oneDNN",
        marks=pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN"),
    ),
]
CONFIGS = [
    pytest.param(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16), 16, id="tiny"),
    pytest.param(GPTConfig(n_layer=1, n_head=4, n_embd=64, block_size=32, vocab_size=65), 20, id="short-seq"),
    pytest.param(GPTConfig(n_layer=1, n_head=1, n_embd=24, block_size=8), 1, id="one-head-one-token"),
    pytest.param(GPTConfig(n_layer=2, n_head=5, n_embd=40, block_size=8, vocab_size=7), 8, id="vocab<width"),
    pytest.param(GPTConfig(), 64, id="ci-model"),
]


def autograd_step(model: GPT, idx: torch.Tensor, targets: torch.Tensor, scale: float) -> float:
    _, loss = model(idx, targets)
    assert loss is not None
    (loss * scale).backward()
    return float(loss.detach()) * scale


def grads(model: GPT) -> dict[str, torch.Tensor]:
    out = {}
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        out[name] = param.grad.clone()
    return out


def batch(config: GPTConfig, seq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, config.vocab_size, (3, seq), generator=gen) for _ in range(2))  # type: ignore[return-value]


@pytest.mark.parametrize("onednn", BACKENDS)
@pytest.mark.parametrize(("config", "seq"), CONFIGS)
def test_hand_written_gradients_equal_autograds(config: GPTConfig, seq: int, onednn: bool) -> None:
    torch.manual_seed(0)
    model = GPT(config)
    # Train a little first, so no gradient is trivially small or zero.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    steps = [(*batch(config, seq, 1), 0.3), (*batch(config, seq, 2), 0.7)]  # two accumulated micro-steps

    expected_losses = [autograd_step(model, x, y, s) for x, y, s in steps]
    expected = grads(model)
    model.zero_grad(set_to_none=True)
    losses = [float(forward_backward(model, x, y, Products(onednn), scale=s)) for x, y, s in steps]
    got = grads(model)

    assert losses == pytest.approx(expected_losses, rel=1e-6)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert got[name].shape == grad.shape and got[name].is_contiguous(), name
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()), msg=name)


@pytest.mark.parametrize("onednn", BACKENDS)
@pytest.mark.parametrize(("config", "seq"), CONFIGS)
def test_eval_loss_is_the_models_loss(config: GPTConfig, seq: int, onednn: bool) -> None:
    torch.manual_seed(0)
    model = GPT(config).eval()
    x, y = batch(config, seq, 4)
    with torch.no_grad():
        _, expected = model(x, y)
    assert expected is not None
    got = eval_loss(model, x, y, Products(onednn))
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("onednn", BACKENDS)
def test_gradients_add_onto_existing_ones_whatever_their_layout(onednn: bool) -> None:
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32)
    torch.manual_seed(0)
    model = GPT(config)
    x, y = batch(config, 8, 3)
    autograd_step(model, x, y, 1.0)
    expected = grads(model)
    before = {}
    for name, param in model.named_parameters():
        start = torch.randn(param.shape[::-1]).t() if param.dim() == 2 else torch.randn(param.shape)
        param.grad, before[name] = start, start.clone()
    forward_backward(model, x, y, Products(onednn))
    for name, param in model.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(param.grad, before[name] + expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_hand_written_step_refuses_a_sequence_longer_than_the_block() -> None:
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)
    x, y = batch(config, 9, 0)
    with pytest.raises(ValueError, match="length 9 exceeds block_size 8"):
        forward_backward(GPT(config), x, y, Products(False))


@pytest.mark.parametrize("has_onednn", [True, False], ids=["oneDNN", "no-oneDNN"])
@pytest.mark.parametrize(
    ("requested", "config", "device", "distributed", "engine"),
    [
        ("auto", GPTConfig(), "cpu", False, "onednn"),
        ("onednn", GPTConfig(), "cpu", False, "onednn"),
        ("mm", GPTConfig(), "cpu", False, "mm"),
        ("autograd", GPTConfig(), "cpu", False, "autograd"),
        ("auto", GPTConfig(dropout=0.1), "cpu", False, "autograd"),
        ("auto", GPTConfig(bias=True), "cpu", False, "autograd"),
        ("auto", GPTConfig(), "cpu", True, "autograd"),
        ("auto", GPTConfig(), "cuda", False, "autograd"),
    ],
)
def test_engine_is_the_hand_written_step_only_where_it_applies(
    monkeypatch: pytest.MonkeyPatch,
    requested: str,
    config: GPTConfig,
    device: str,
    distributed: bool,
    engine: str,
    has_onednn: bool,
) -> None:
    monkeypatch.setattr(cpu_engine, "onednn_available", lambda: has_onednn)
    expected = "mm" if engine == "onednn" and not has_onednn else engine
    assert resolve_engine(requested, GPT(config), device, distributed) == expected


def test_a_model_the_step_does_not_compute_as_written_keeps_autograd() -> None:
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)
    frozen = GPT(config)
    frozen.transformer.wpe.weight.requires_grad_(False)
    untied = GPT(config)
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    assert resolve_engine("auto", GPT(config), "cpu", False) != "autograd"
    assert resolve_engine("auto", frozen, "cpu", False) == "autograd"
    assert resolve_engine("auto", untied, "cpu", False) == "autograd"


def test_an_unknown_engine_is_refused_naming_the_variable() -> None:
    with pytest.raises(NanechoError) as caught:
        resolve_engine("fast", GPT(GPTConfig()), "cpu", False)
    assert (
        str(caught.value) == "Error: NANECHO_CPU_ENGINE must be one of auto, onednn, mm, autograd, not 'fast'"
    )


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_training_runs_follow_the_same_trajectory_with_either_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grad_accum: int
) -> None:
    overrides = {
        **TINY_OVERRIDES,
        "model": {**TINY_OVERRIDES["model"], "dropout": 0.0},
        "train": {**TINY_OVERRIDES["train"], "grad_accum": grad_accum},
    }
    config = resolve_config("ci", overrides)
    splits = load_splits(write_corpus(tmp_path), tmp_path / "cache", 0.1, 16)
    runs = {}
    for engine in ("auto", "autograd"):
        monkeypatch.setenv("NANECHO_CPU_ENGINE", engine)
        trainer = Trainer(config, splits, "cpu")
        losses = [float(trainer.train_one_iteration()) for _ in range(30)]
        runs[trainer.engine] = (losses, trainer.evaluate())
    assert runs.keys() == {"onednn" if onednn_available() else "mm", "autograd"}
    (hand, hand_val), (auto, auto_val) = runs.values()
    assert hand[-1] < hand[0] - 1.0  # it learned
    assert hand == pytest.approx(auto, rel=1e-4)
    assert hand_val == pytest.approx(auto_val, rel=1e-4)


@pytest.mark.parametrize(
    ("saved_with", "session", "warned_about"),
    [
        ("autograd", "autograd", None),
        (None, "autograd", None),  # a checkpoint from before the CPU step: trained with autograd
        (None, "mm", "autograd"),
        ("mm", "autograd", "mm"),
        ("x", "autograd", "another"),
    ],
)
def test_resuming_on_another_step_says_it_will_not_be_bit_identical(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    saved_with: str | None,
    session: str,
    warned_about: str | None,
) -> None:
    overrides = {**TINY_OVERRIDES, "model": {**TINY_OVERRIDES["model"], "dropout": 0.0}}
    config = resolve_config("ci", overrides)
    splits = load_splits(write_corpus(tmp_path), tmp_path / "cache", 0.1, 16)
    state = Trainer(config, splits, "cpu").training_state()
    if saved_with is None:
        del state["engine"]
    else:
        state["engine"] = saved_with
    monkeypatch.setenv("NANECHO_CPU_ENGINE", session)
    trainer = Trainer(config, splits, "cpu")
    trainer.restore(state, "ckpt.pt")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    expected = (
        f"ckpt.pt was trained with the {warned_about} step, this session uses the {session} step: it "
        "continues correctly, but not bit-identically to a run that never switched (NANECHO_CPU_ENGINE)"
    )
    assert warnings == ([] if warned_about is None else [expected])

"""The hand-written CPU step computes what autograd computes, and is used exactly where it applies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanecho_core.cpu_engine import Products, forward_backward, onednn_available, resolve_engine
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
    steps = [(*batch(config, seq, 1), 0.5), (*batch(config, seq, 2), 0.5)]  # two accumulated micro-steps

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


def test_hand_written_step_refuses_a_sequence_longer_than_the_block() -> None:
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)
    x, y = batch(config, 9, 0)
    with pytest.raises(ValueError, match="length 9 exceeds block_size 8"):
        forward_backward(GPT(config), x, y, Products(False))


@pytest.mark.parametrize(
    ("requested", "config", "device", "distributed", "engine"),
    [
        ("auto", GPTConfig(), "cpu", False, "onednn" if onednn_available() else "mm"),
        ("onednn", GPTConfig(), "cpu", False, "onednn" if onednn_available() else "mm"),
        ("mm", GPTConfig(), "cpu", False, "mm"),
        ("autograd", GPTConfig(), "cpu", False, "autograd"),
        ("auto", GPTConfig(dropout=0.1), "cpu", False, "autograd"),
        ("auto", GPTConfig(bias=True), "cpu", False, "autograd"),
        ("auto", GPTConfig(), "cpu", True, "autograd"),
        ("auto", GPTConfig(), "cuda", False, "autograd"),
    ],
)
def test_engine_is_the_hand_written_step_only_where_it_applies(
    requested: str, config: GPTConfig, device: str, distributed: bool, engine: str
) -> None:
    assert resolve_engine(requested, config, device, distributed) == engine


def test_an_unknown_engine_is_refused_naming_the_variable() -> None:
    with pytest.raises(NanechoError) as caught:
        resolve_engine("fast", GPTConfig(), "cpu", False)
    assert (
        str(caught.value) == "Error: NANECHO_CPU_ENGINE must be one of auto, onednn, mm, autograd, not 'fast'"
    )


def test_training_runs_follow_the_same_trajectory_with_either_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {**TINY_OVERRIDES, "model": {**TINY_OVERRIDES["model"], "dropout": 0.0}}
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

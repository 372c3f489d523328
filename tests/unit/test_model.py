"""The GPT module and the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from nanecho_core.model import GPT, GPTConfig
from nanecho_core.schedule import learning_rate

TINY = GPTConfig(block_size=16, vocab_size=256, n_layer=2, n_head=2, n_embd=32)


def test_forward_shapes_and_initial_loss_is_near_uniform() -> None:
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 256, (3, 16))
    logits, loss = model(idx, torch.randint(0, 256, (3, 16)))
    assert logits.shape == (3, 16, 256)
    assert loss is not None and abs(float(loss.detach()) - math.log(256)) < 0.3
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 256) and loss is None


def test_embedding_and_head_share_one_matrix() -> None:
    model = GPT(TINY)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params() == sum(p.numel() for p in model.parameters()) - 16 * 32


def test_optimizer_decays_matrices_only() -> None:
    model = GPT(TINY)
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])


def test_flops_per_token_follows_6n_plus_attention() -> None:
    model = GPT(TINY)
    assert model.estimate_flops_per_token() == 6 * model.num_params() + 12 * 2 * 2 * 16 * 16


def test_sequences_longer_than_the_block_are_refused() -> None:
    with pytest.raises(ValueError, match="block_size"):
        GPT(TINY)(torch.zeros(1, 17, dtype=torch.long))


def test_lr_schedule_is_a_continuous_function_of_the_global_iteration() -> None:
    kw = {"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "lr_decay_iters": 2000}
    lrs = [learning_rate(i, **kw) for i in range(2500)]
    assert lrs[0] == pytest.approx(1e-3 / 101)
    assert all(a < b for a, b in zip(lrs[:100], lrs[1:101], strict=True))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[100:2000], lrs[101:2001], strict=True))  # cosine falls
    assert lrs[100] == pytest.approx(1e-3, rel=1e-3)
    assert lrs[1999] == pytest.approx(1e-4, rel=1e-3) and set(lrs[2000:]) == {1e-4}
    assert max(abs(a - b) for a, b in zip(lrs, lrs[1:], strict=False)) < 1.1e-5  # no jumps

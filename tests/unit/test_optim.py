"""FusedAdamW is torch.optim.AdamW(fused=True) bit for bit, state_dict included, minus its start-up."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
import torch

from nanecho_core.optim import FusedAdamW


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 4), (4,), (3, 5), (5,)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def grouped(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def torch_adamw(params: list[torch.nn.Parameter]) -> torch.optim.AdamW:
    return torch.optim.AdamW(grouped(params), lr=3e-3, betas=(0.9, 0.99), fused=True)


def ours(params: list[torch.nn.Parameter]) -> FusedAdamW:
    return FusedAdamW(grouped(params), lr=3e-3, betas=(0.9, 0.99))


def give_grads(params: list[torch.nn.Parameter], step: int, skip: int | None = None) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i == skip else torch.randn(p.shape, generator=gen)


def run(opt: Any, params: list[torch.nn.Parameter], steps: range) -> None:
    for step in steps:
        give_grads(params, step, skip=1 if step == 2 else None)  # a parameter without a grad at one step
        for group in opt.param_groups:
            group["lr"] = 3e-3 * (1 - step / 10)  # the trainer sets the lr every step
        opt.step()
        opt.zero_grad(set_to_none=True)


def assert_same(a: list[torch.nn.Parameter], b: list[torch.nn.Parameter]) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def assert_same_state_dicts(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for number, state in a["state"].items():
        assert state.keys() == b["state"][number].keys()
        for key, value in state.items():
            other = b["state"][number][key]
            assert value.dtype == other.dtype and torch.equal(value, other), (number, key)


def test_updates_are_bit_identical_to_torch_fused_adamw() -> None:
    mine, theirs = make_params(), make_params()
    run(ours(mine), mine, range(6))
    run(torch_adamw(theirs), theirs, range(6))
    assert_same(mine, theirs)
    assert not torch.equal(mine[0], make_params()[0])  # it did move


def test_state_dict_has_torch_layout() -> None:
    mine, theirs = make_params(), make_params()
    opt_mine, opt_theirs = ours(mine), torch_adamw(theirs)
    run(opt_mine, mine, range(3))
    run(opt_theirs, theirs, range(3))
    assert_same_state_dicts(opt_mine.state_dict(), opt_theirs.state_dict())


@pytest.mark.parametrize("direction", ["torch-to-ours", "ours-to-torch"])
def test_checkpoints_move_between_the_two_and_continue_identically(direction: str) -> None:
    first, params = (torch_adamw, ours) if direction == "torch-to-ours" else (ours, torch_adamw)
    before = make_params()
    opt = first(before)
    run(opt, before, range(3))
    saved = copy.deepcopy(opt.state_dict())  # as through a checkpoint file: no shared tensors

    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in before]
    resumed = params(resumed_params)
    resumed.load_state_dict(saved)
    run(resumed, resumed_params, range(3, 6))
    run(opt, before, range(3, 6))
    assert_same(resumed_params, before)


def fitted_ours() -> tuple[FusedAdamW, dict[str, Any]]:
    params = make_params()
    opt = ours(params)
    run(opt, params, range(2))
    return ours(make_params()), opt.state_dict()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda sd: sd["param_groups"].pop(), ValueError, "different number of parameter groups"),
        (lambda sd: sd["param_groups"][0]["params"].pop(), ValueError, "doesn't match the size"),
        (
            lambda sd: sd["state"][0].update(exp_avg=torch.zeros(4, 6)),
            ValueError,
            r"state 0.exp_avg is \(4, 6\)",
        ),
        (lambda sd: sd["state"][1].update(exp_avg_sq="x"), ValueError, "state 1.exp_avg_sq is str"),
        (lambda sd: sd.update(state="x"), TypeError, "optimizer state is a str, not a dict"),
        (lambda sd: sd["state"][0].pop("step"), KeyError, "step"),
        (lambda sd: sd["state"].update({7: sd["state"][0]}), ValueError, "state 7 belongs to no parameter"),
        (
            lambda sd: sd["state"].update({"0": sd["state"].pop(0)}),
            ValueError,
            "state '0' belongs to no parameter",
        ),
        (
            lambda sd: sd["param_groups"][0]["params"].__setitem__(0, "a"),
            ValueError,
            "distinct integers, got 'a'",
        ),
        (
            lambda sd: sd["param_groups"][1]["params"].__setitem__(0, 0),
            ValueError,
            "distinct integers, got 0",
        ),
        (lambda sd: sd["param_groups"][0].update(betas=(0.9, 1.0)), ValueError, "out of range"),
        (
            lambda sd: sd["param_groups"][0].update(betas=(float("nan"), 0.9)),
            ValueError,
            "betas is not finite",
        ),
        (lambda sd: sd["param_groups"][1].update(eps=0.0), ValueError, "out of range"),
        (
            lambda sd: sd["param_groups"][1].update(weight_decay=float("inf")),
            ValueError,
            "weight_decay is not finite",
        ),
        (lambda sd: sd["state"][0].update(step=torch.tensor(-1.0)), ValueError, "0.step is negative"),
        (
            lambda sd: sd["state"][0].update(step=torch.tensor(float("nan"))),
            ValueError,
            "0.step is not finite",
        ),
        (lambda sd: sd["state"][0]["exp_avg"].fill_(float("inf")), ValueError, "0.exp_avg holds non-finite"),
        (
            lambda sd: sd["state"][0]["exp_avg_sq"].fill_(-1.0),
            ValueError,
            "0.exp_avg_sq holds non-finite or negative",
        ),
        (
            lambda sd: sd["state"][0].update(exp_avg=sd["state"][0]["exp_avg"].to_sparse()),
            ValueError,
            "torch.sparse_coo torch.float32 tensor, not a dense float one",
        ),
        (
            lambda sd: sd["state"][0].update(exp_avg=torch.zeros(6, 4, dtype=torch.int64)),
            ValueError,
            "torch.strided torch.int64 tensor",
        ),
    ],
)
def test_a_state_dict_that_does_not_fit_is_refused_and_changes_nothing(
    change: Any, error: type, message: str
) -> None:
    opt, saved = fitted_ours()
    change(saved)
    groups_before = [dict(g) for g in opt.param_groups]
    with pytest.raises(error, match=message):
        opt.load_state_dict(saved)
    assert opt.state == {} and opt.param_groups == groups_before


def test_zero_grad_clears_or_zeroes() -> None:
    params = make_params()
    opt = ours(params)
    give_grads(params, 0)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_training_on_cpu_never_imports_torch_dynamo() -> None:
    code = (
        "import sys, torch\n"
        "from nanecho_core.model import GPT, GPTConfig\n"
        "model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))\n"
        "opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), 'cpu')\n"
        "x = torch.zeros((2, 8), dtype=torch.long)\n"
        "model(x, x)[1].backward(); opt.step(); opt.zero_grad(); opt.load_state_dict(opt.state_dict())\n"
        "print(type(opt).__name__, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "FusedAdamW False\n"


def test_loaded_state_is_fresh_contiguous_memory_whatever_the_checkpoint_held() -> None:
    # A crafted checkpoint can hold strided or shared tensors; the fused kernel assumes each state
    # tensor is its own contiguous block (a stride-0 one was written out of bounds).
    opt, saved = fitted_ours()
    shared = torch.zeros(4, 6).t()  # transposed: (6, 4), non-contiguous
    saved["state"][0].update(exp_avg=shared, exp_avg_sq=shared)
    saved["state"][1].update(exp_avg=torch.zeros(1).expand(3, 5), exp_avg_sq=torch.zeros(1).expand(3, 5))
    opt.load_state_dict(saved)
    tensors = [t for s in opt.state.values() for t in s.values()]
    assert all(t.is_contiguous() for t in tensors)
    assert len({t.data_ptr() for t in tensors}) == len(tensors)  # nothing shared, nothing aliased
    assert all(t.data_ptr() != shared.data_ptr() for t in tensors)

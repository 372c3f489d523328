"""AdamW on torch's fused kernel, without torch.optim.

torch.optim's first use imports torch._dynamo (Optimizer.__init__ and step are wrapped for
torch.compile): 1.2 s of every train-step's start-up, for a 25 s CI session on the CPU. This class
calls the same kernel torch.optim.AdamW(fused=True) calls, `torch._fused_adamw_`, the same way (the
step counters incremented first), so the update is bit-identical; and it reads and writes the same
state_dict layout, so checkpoints move between the two in either direction (both tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

# The keys torch.optim.AdamW(fused=True) keeps in every parameter group, with its values.
_GROUP_DEFAULTS: dict[str, Any] = {
    "eps": 1e-8,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": True,
}


class FusedAdamW:
    """AdamW (decoupled weight decay) over parameter groups, one fused kernel call per group."""

    def __init__(self, groups: Iterable[dict[str, Any]], lr: float, betas: tuple[float, float]) -> None:
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            params = list(group["params"])
            self.param_groups.append(
                {
                    "weight_decay": group["weight_decay"],
                    "lr": lr,
                    "betas": betas,
                    **_GROUP_DEFAULTS,
                    "params": params,
                }
            )
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                amsgrad=False,
                lr=float(group["lr"]),
                beta1=float(beta1),
                beta2=float(beta2),
                weight_decay=float(group["weight_decay"]),
                eps=float(group["eps"]),
                maximize=False,
            )

    def _state(self, param: Tensor) -> dict[str, Tensor]:
        state = self.state.get(param)
        if state is None:
            state = self.state[param] = {
                "step": torch.zeros((), dtype=torch.float32, device=param.device),
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
            }
        return state

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: parameters numbered across groups in order, state keyed by number."""
        numbers: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [numbers.setdefault(id(p), len(numbers)) for p in group["params"]]
            groups.append(packed)
        state = {numbers[id(p)]: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this class or of torch.optim.AdamW (fused or foreach).

        Everything is checked before anything changes, and every state tensor is copied into fresh
        contiguous memory: the fused kernel assumes that layout, and a strided, sparse or shared
        tensor from a crafted checkpoint would otherwise be updated wrongly or out of bounds.
        Raises ValueError/TypeError/KeyError naming what does not fit.
        """
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, list) or len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        by_number: dict[int, Tensor] = {}
        groups = []
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            numbers = saved["params"]
            if len(numbers) != len(group["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
                )
            for number, param in zip(numbers, group["params"], strict=True):
                if type(number) is not int or number in by_number:
                    raise ValueError(f"optimizer parameter numbers must be distinct integers, got {number!r}")
                by_number[number] = param
            groups.append({**group, **_hyperparameters(saved)})
        saved_states = state_dict["state"]
        if not isinstance(saved_states, dict):
            raise TypeError(f"optimizer state is a {type(saved_states).__name__}, not a dict")
        state: dict[Tensor, dict[str, Tensor]] = {}
        for number, saved_state in saved_states.items():
            param = by_number.get(number) if type(number) is int else None
            if param is None:
                raise ValueError(f"optimizer state {number!r} belongs to no parameter")
            state[param] = _fitted(saved_state, param, number)
        self.param_groups, self.state = groups, state


def _hyperparameters(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved group's lr, betas, eps and weight decay, as floats in AdamW's ranges."""
    lr, eps, decay = (_finite(saved[key], key) for key in ("lr", "eps", "weight_decay"))
    beta1, beta2 = (_finite(b, "betas") for b in saved["betas"])
    if lr < 0 or eps <= 0 or decay < 0 or not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(
            f"optimizer hyperparameters out of range: lr {lr}, betas ({beta1}, {beta2}), eps {eps}, weight_decay {decay}"
        )
    return {"lr": lr, "betas": (beta1, beta2), "eps": eps, "weight_decay": decay}


def _finite(value: Any, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"optimizer {what} is not finite: {number}")
    return number


def _fitted(saved: dict[str, Any], param: Tensor, number: int) -> dict[str, Tensor]:
    """One parameter's saved state, checked, in fresh contiguous tensors on its device and dtype."""
    step = _finite(torch.as_tensor(saved["step"]).item(), f"state {number}.step")
    if step < 0:
        raise ValueError(f"optimizer state {number}.step is negative: {step}")
    out = {"step": torch.tensor(step, dtype=torch.float32, device=param.device)}
    for key in ("exp_avg", "exp_avg_sq"):
        value = saved[key]
        if not isinstance(value, Tensor) or value.shape != param.shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"optimizer state {number}.{key} is {shape}, its parameter {tuple(param.shape)}")
        if value.layout != torch.strided or not value.is_floating_point():
            raise ValueError(
                f"optimizer state {number}.{key} is a {value.layout} {value.dtype} tensor, not a dense float one"
            )
        fresh = torch.empty_like(param, memory_format=torch.contiguous_format).copy_(value)
        if not torch.isfinite(fresh).all() or (key == "exp_avg_sq" and (fresh < 0).any()):
            raise ValueError(f"optimizer state {number}.{key} holds non-finite or negative values")
        out[key] = fresh
    return out

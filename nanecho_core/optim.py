"""AdamW on torch's fused kernel, without torch.optim.

torch.optim's first use imports torch._dynamo (Optimizer.__init__ and step are wrapped for
torch.compile): 1.2 s of every train-step's start-up, for a 25 s CI session on the CPU. This class
calls the same kernel torch.optim.AdamW(fused=True) calls, `torch._fused_adamw_`, the same way (the
step counters incremented first), so the update is bit-identical; and it reads and writes the same
state_dict layout, so checkpoints move between the two in either direction (both tested).
"""

from __future__ import annotations

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
        """Load a state_dict of this class or of torch.optim.AdamW; ValueError where it does not fit."""
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, list) or len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        by_number: dict[Any, Tensor] = {}
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
                )
            by_number.update(zip(saved["params"], group["params"], strict=True))
        saved_states = state_dict["state"]
        if not isinstance(saved_states, dict):
            raise TypeError(f"optimizer state is a {type(saved_states).__name__}, not a dict")
        state: dict[Tensor, dict[str, Tensor]] = {}
        for number, saved_state in saved_states.items():
            param = by_number.get(number)
            if param is not None:
                state[param] = _fitted(saved_state, param, number)
        groups = []
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            beta1, beta2 = saved["betas"]
            hyper = {k: saved[k] for k in ("lr", "weight_decay", "eps")}
            groups.append(
                {**group, **{k: float(v) for k, v in hyper.items()}, "betas": (float(beta1), float(beta2))}
            )
        self.param_groups, self.state = groups, state


def _fitted(saved: dict[str, Any], param: Tensor, number: Any) -> dict[str, Tensor]:
    """One parameter's saved state on its device and dtype, checked against its shape."""
    out = {"step": torch.as_tensor(saved["step"]).to(dtype=torch.float32, device=param.device).reshape(())}
    for key in ("exp_avg", "exp_avg_sq"):
        value = saved[key]
        if not isinstance(value, Tensor) or value.shape != param.shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"optimizer state {number}.{key} is {shape}, its parameter {tuple(param.shape)}")
        out[key] = value.to(dtype=param.dtype, device=param.device)
    return out

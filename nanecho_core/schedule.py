"""The learning-rate schedule: a pure function of the global iteration, so sessions cannot bend it."""

from __future__ import annotations

import math


def learning_rate(
    iteration: int, *, learning_rate: float, min_lr: float, warmup_iters: int, lr_decay_iters: int
) -> float:
    """Linear warmup, cosine decay to `min_lr` at `lr_decay_iters`, then constant `min_lr`.

    `iteration` is the global index of the step about to be taken (0 for the very first one).
    """
    if iteration < warmup_iters:
        return learning_rate * (iteration + 1) / (warmup_iters + 1)
    if iteration >= lr_decay_iters:
        return min_lr
    span = max(1, lr_decay_iters - warmup_iters)
    ratio = (iteration - warmup_iters) / span
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)

"""Pacing a session: running time estimates for the wall-time budget, and the terminal progress bar."""

from __future__ import annotations

import sys
from typing import Any


class Estimates:
    """Running estimates of iteration, eval and save time for the wall-time budget.

    Before anything is measured, one estimate is derived from the other (a training iteration costs
    about three forward passes of a batch); with neither, a pessimistic default.
    """

    def __init__(self, save_estimate: float, eval_batches: int) -> None:
        self.measured_iteration: float | None = None
        self.measured_eval: float | None = None
        self.save = save_estimate
        self.eval_batches = max(1, eval_batches)

    @property
    def iteration(self) -> float:
        if self.measured_iteration is not None:
            return self.measured_iteration
        if self.measured_eval is not None:
            return 3.0 * self.measured_eval / self.eval_batches
        return 0.5

    @property
    def eval(self) -> float:
        if self.measured_eval is not None:
            return self.measured_eval
        if self.measured_iteration is not None:
            return self.measured_iteration * self.eval_batches / 3.0
        return 1.0

    @eval.setter
    def eval(self, seconds: float) -> None:
        self.measured_eval = seconds

    def observe_iteration(self, seconds: float) -> None:
        # Recent-weighted, but never below the latest: a slow iteration predicts slow ones.
        last = self.measured_iteration
        self.measured_iteration = seconds if last is None else max(seconds, 0.8 * last + 0.2 * seconds)


class Progress:
    """A rich progress bar on a terminal, nothing otherwise (log lines carry the same facts)."""

    def __init__(self, start: int, target: int) -> None:
        self.enabled = sys.stderr.isatty() and target > start
        self.start, self.target = start, target
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("training", total=self.target - self.start)
        return self

    def update(self, iteration: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=iteration - self.start)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

"""One session's loop: budgets (iterations, wall time), scheduled evals and saves, graceful stops,
progress lines. The Trainer (trainer.py) owns the state and the step; this decides when to step,
evaluate, save and stop, and reports what happened as a SessionOutcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nanecho_core.pacing import Estimates, Progress

if TYPE_CHECKING:
    from nanecho_core.signals import StopRequest
    from nanecho_core.trainer import Trainer

log = logging.getLogger(__name__)
SAVE_BYTES_PER_S = 100e6  # conservative disk speed for the first save-time estimate
Save = Callable[["Trainer"], None]


@dataclass(frozen=True)
class Budget:
    """How far this session may go: `iters` more, up to `until_iter`, and/or `max_minutes` of wall time."""

    iters: int | None = None
    until_iter: int | None = None
    max_minutes: float | None = None

    def target(self, start_iteration: int) -> int:
        targets = []
        if self.iters is not None:
            targets.append(start_iteration + self.iters)
        if self.until_iter is not None:
            targets.append(self.until_iter)
        if not targets:
            raise ValueError("a budget needs iters or until_iter")
        return max(start_iteration, min(targets))


@dataclass
class EvalPoint:
    iteration: int
    val_loss: float
    train_loss: float | None
    scheduled: bool

    def compact(self) -> list[Any]:
        return [self.iteration, self.val_loss, self.train_loss]


@dataclass
class SessionOutcome:
    start_iteration: int
    end_iteration: int
    stop_reason: str
    eval_points: list[EvalPoint] = field(default_factory=list)
    train_seconds: float = 0.0
    tokens_trained: int = 0
    max_iteration_s: float = 0.0
    max_save_s: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens_trained / self.train_seconds if self.train_seconds > 0 else None


def run_session(
    trainer: Trainer,
    budget: Budget,
    save: Save,
    *,
    stop: StopRequest | None = None,
    started: float | None = None,
) -> SessionOutcome:
    """Train until the budget or a signal says stop; eval on schedule and at the end; save."""
    clock = trainer.clock
    started = clock() if started is None else started
    deadline = None if budget.max_minutes is None else started + budget.max_minutes * 60.0
    start_iteration = trainer.iteration
    target = budget.target(start_iteration)
    interval = int(trainer.train_cfg["eval_interval"])
    log_interval = int(trainer.train_cfg["log_interval"])
    outcome = SessionOutcome(start_iteration, start_iteration, "budget_iters")
    trainer.model.train()
    timer = Estimates(_first_save_estimate(trainer), len(trainer.eval_set))
    last_saved = start_iteration
    last_eval = start_iteration if trainer.last_val_loss is not None else None
    if trainer.iteration == 0 and trainer.last_val_loss is None:
        _scheduled_eval(trainer, outcome, timer, save=None)
        last_eval = 0
    progress = Progress(start_iteration, target)
    if trainer.dist is not None and not trainer.dist.is_main:
        progress.enabled = False  # one bar, rank 0's
    window_start, window_iters = clock(), 0
    with progress:
        while trainer.iteration < target:
            reason = _stop_reason(trainer, stop, deadline, timer)
            if trainer.dist is not None:  # all ranks stop after the same iteration
                reason = trainer.dist.agree_stop(reason, trainer.iteration)
            if reason is not None:
                outcome.stop_reason = reason
                break
            t0 = clock()
            loss = trainer.train_one_iteration()
            elapsed = clock() - t0
            timer.observe_iteration(elapsed)
            outcome.max_iteration_s = max(outcome.max_iteration_s, elapsed)
            outcome.train_seconds += elapsed
            outcome.tokens_trained += trainer.tokens_per_iter
            window_iters += 1
            if trainer.iteration % log_interval == 0 or trainer.iteration == target:
                now = clock()
                rate = window_iters * trainer.tokens_per_iter / max(now - window_start, 1e-9)
                eta = (target - trainer.iteration) * timer.iteration
                if deadline is not None:
                    eta = min(eta, max(0.0, deadline - now))
                log.info(
                    "iter %d/%d loss %.4f lr %.2e %.0f tok/s elapsed %.1fs eta %.1fs",
                    trainer.iteration,
                    target,
                    float(loss.item()),
                    trainer.lr_at(trainer.iteration - 1),
                    rate,
                    now - started,
                    eta,
                )
                progress.update(trainer.iteration)
                window_start, window_iters = now, 0
            if trainer.iteration % interval == 0:
                if _scheduled_eval(trainer, outcome, timer, save=save):
                    last_saved = trainer.iteration
                last_eval = trainer.iteration
    outcome.end_iteration = trainer.iteration
    if trainer.iteration > start_iteration:
        if last_eval != trainer.iteration:
            t0 = clock()
            val = trainer.evaluate()
            timer.eval = clock() - t0
            # Not a scheduled eval: the accumulator keeps running so the next scheduled train_loss
            # is the same as in an uninterrupted run.
            outcome.eval_points.append(EvalPoint(trainer.iteration, val, trainer.mean_train_loss(), False))
            trainer.record_val(val)
        if last_saved != trainer.iteration:
            _timed_save(trainer, save, timer, outcome)
    return outcome


def _stop_reason(
    trainer: Trainer, stop: StopRequest | None, deadline: float | None, timer: Estimates
) -> str | None:
    if stop is not None and stop.requested:
        return "signal"
    if deadline is not None:
        # One iteration, then either its scheduled eval (+ save) or the end eval + save.
        need = 1.1 * (timer.iteration + timer.eval + timer.save) + 0.05
        if trainer.clock() + need > deadline:
            return "budget_time"
    return None


def _scheduled_eval(trainer: Trainer, outcome: SessionOutcome, timer: Estimates, save: Save | None) -> bool:
    t0 = trainer.clock()
    val = trainer.evaluate()
    timer.eval = trainer.clock() - t0
    train_loss = trainer.take_train_loss()
    outcome.eval_points.append(EvalPoint(trainer.iteration, val, train_loss, True))
    log.info("eval at iter %d: val_loss %.4f train_loss %s", trainer.iteration, val, _fmt(train_loss))
    if trainer.record_val(val) and save is not None and trainer.iteration > outcome.start_iteration:
        _timed_save(trainer, save, timer, outcome)
        return True
    return False


def _timed_save(trainer: Trainer, save: Save, timer: Estimates, outcome: SessionOutcome) -> None:
    t0 = trainer.clock()
    if trainer.dist is None or trainer.dist.is_main:  # rank 0 alone writes
        save(trainer)
    timer.save = trainer.clock() - t0
    outcome.max_save_s = max(outcome.max_save_s, timer.save)


def _first_save_estimate(trainer: Trainer) -> float:
    n_bytes = sum(p.numel() * p.element_size() for p in trainer.raw_model.parameters()) * 3
    return 0.05 + n_bytes / SAVE_BYTES_PER_S


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

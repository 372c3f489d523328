"""Exact resume: N iterations in one session == the same N split across K sessions, bit for bit."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from nanecho_core.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from nanecho_core.cpu_engine import onednn_available
from nanecho_core.data import load_splits
from nanecho_core.presets import resolve_config
from nanecho_core.session_loop import Budget
from nanecho_core.signals import StopRequest
from nanecho_core.trainer import Trainer
from tests.trainer_support import TINY_OVERRIDES, assert_same_training_state, write_corpus

ENGINE = "onednn" if onednn_available() else "mm"
TOTAL = 35  # eval_interval 10: evals at 0, 10, 20, 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


class Run:
    """Drives Trainer sessions through real checkpoint files, like train-step does."""

    def __init__(self, directory: Path, corpus: Path, dropout: float = 0.1) -> None:
        self.dir = directory
        self.config = resolve_config(
            "ci", {**TINY_OVERRIDES, "model": {**TINY_OVERRIDES["model"], "dropout": dropout}}
        )
        self.splits = load_splits(corpus, directory / "cache", 0.1, 16)
        self.saved: list[tuple[Path, str]] = []
        self.losses: list[float] = []
        self.scheduled_evals: list[tuple[int, float, float | None]] = []
        self.stop_reasons: list[str] = []
        self.engines: list[str] = []

    def save(self, trainer: Trainer) -> None:
        path = self.dir / f"{len(self.saved):03d}-{trainer.iteration}.pt"
        state = {"format": FORMAT, "id": path.stem, "config": self.config, "fingerprints": {}}
        state.update(trainer.training_state())
        self.saved.append((path, save_checkpoint(state, path)[0]))

    def latest(self) -> dict[str, Any]:
        return load_checkpoint(*self.saved[-1])

    def session(self, budget: Budget, clock: Any = None, stop: StopRequest | None = None) -> Trainer:
        kwargs = {"clock": clock} if clock is not None else {}
        trainer = Trainer(self.config, self.splits, "cpu", record_losses=True, **kwargs)
        if self.saved:
            trainer.restore(self.latest(), "latest")
        self.engines.append(trainer.engine)
        outcome = trainer.run(budget, self.save, stop=stop)
        self.outcome = outcome
        assert trainer.loss_history is not None
        self.losses += [float(x) for x in trainer.loss_history]
        self.scheduled_evals += [
            (p.iteration, p.val_loss, p.train_loss) for p in outcome.eval_points if p.scheduled
        ]
        self.stop_reasons.append(outcome.stop_reason)
        return trainer


def uninterrupted(tmp_path: Path, corpus: Path, dropout: float = 0.1) -> Run:
    run = Run(tmp_path / "one", corpus, dropout)
    run.session(Budget(until_iter=TOTAL))
    return run


# dropout 0.1 trains through autograd (and restores the dropout RNG); dropout 0 through the
# hand-written CPU step (cpu_engine.py), on oneDNN where this torch has it.
ENGINES = [pytest.param(0.1, id="autograd"), pytest.param(0.0, id="hand-written")]


@pytest.mark.parametrize("dropout", ENGINES)
@pytest.mark.parametrize(
    "targets",
    [
        pytest.param([17, TOTAL], id="K2-mid-interval"),
        pytest.param([7, 13, 26, TOTAL], id="K4-mid-interval", marks=pytest.mark.slow),
        pytest.param([20, TOTAL], id="K2-at-eval-boundary", marks=pytest.mark.slow),
    ],
)
def test_split_sessions_reproduce_the_uninterrupted_run_bit_for_bit(
    tmp_path: Path, corpus: Path, targets: list[int], dropout: float
) -> None:
    one = uninterrupted(tmp_path, corpus, dropout)
    split = Run(tmp_path / "split", corpus, dropout)
    for target in targets:
        split.session(Budget(until_iter=target))
    assert split.engines == [("autograd" if dropout else ENGINE)] * len(targets)
    assert_same_training_state(one.latest(), split.latest())
    assert split.losses == one.losses and len(one.losses) == TOTAL
    assert split.scheduled_evals == one.scheduled_evals
    assert [e[0] for e in one.scheduled_evals] == [0, 10, 20, 30]


@pytest.mark.slow
def test_iters_means_more_iterations_from_the_resumed_point(tmp_path: Path, corpus: Path) -> None:
    run = Run(tmp_path, corpus)
    run.session(Budget(iters=12))
    trainer = run.session(Budget(iters=12))
    assert trainer.iteration == 24
    assert run.latest()["iteration"] == 24


@pytest.mark.slow
def test_time_budget_split_stops_early_and_resumes_on_the_same_trajectory(
    tmp_path: Path, corpus: Path
) -> None:
    ticks = itertools.count()

    def clock() -> float:  # each reading advances 50 ms: a deterministic stand-in for wall time
        return next(ticks) * 0.05

    one = uninterrupted(tmp_path, corpus)
    split = Run(tmp_path / "split", corpus)
    first = split.session(Budget(until_iter=TOTAL, max_minutes=0.05), clock=clock)
    assert split.stop_reasons == ["budget_time"]
    assert 0 < first.iteration < TOTAL
    split.session(Budget(until_iter=TOTAL))
    assert_same_training_state(one.latest(), split.latest())
    assert split.losses == one.losses


@pytest.mark.slow
@pytest.mark.parametrize("dropout", ENGINES)
def test_signal_before_an_iteration_stops_saves_and_resumes_identically(
    tmp_path: Path, corpus: Path, dropout: float
) -> None:
    one = uninterrupted(tmp_path, corpus, dropout)
    split = Run(tmp_path / "split", corpus, dropout)
    stop = StopRequest()
    calls = itertools.count()

    def clock() -> float:
        # The loop reads the clock a fixed number of times per iteration; ask to stop part-way.
        if next(calls) == 40:
            stop.requested = "SIGTERM"
        return 0.0

    first = split.session(Budget(until_iter=TOTAL), clock=clock, stop=stop)
    assert split.stop_reasons == ["signal"]
    assert 0 < first.iteration < TOTAL
    assert split.latest()["iteration"] == first.iteration
    split.session(Budget(until_iter=TOTAL))
    assert_same_training_state(one.latest(), split.latest())
    assert split.losses == one.losses


@pytest.mark.slow
def test_wall_time_budget_is_not_overrun_by_more_than_one_iteration_and_a_save(
    tmp_path: Path, corpus: Path
) -> None:
    import time

    run = Run(tmp_path, corpus)
    trainer = Trainer(run.config, run.splits, "cpu")
    t0 = time.monotonic()
    outcome = trainer.run(Budget(iters=10**6, max_minutes=2.5 / 60), run.save, started=t0)
    elapsed = time.monotonic() - t0
    assert outcome.stop_reason == "budget_time"
    assert elapsed - 2.5 <= outcome.max_iteration_s + outcome.max_save_s + 0.25
    if trainer.iteration > 0:  # on a badly overloaded machine the first estimate may forbid any step
        assert run.latest()["iteration"] == trainer.iteration  # the end-of-session save happened


def test_train_loss_is_a_measured_mean_never_zero(tmp_path: Path, corpus: Path) -> None:
    run = Run(tmp_path, corpus)
    run.session(Budget(until_iter=TOTAL))
    at_zero, *later = run.scheduled_evals
    assert at_zero[0] == 0 and at_zero[2] is None  # nothing trained yet: null, not 0
    for iteration, val, train in later:
        assert train is not None and train > 1.0, iteration
        assert val > 1.0
    losses = torch.tensor(run.losses[:10], dtype=torch.float64)
    assert later[0][2] == pytest.approx(float(losses.mean()), rel=1e-6)


def test_extra_eval_does_not_touch_training_rng(tmp_path: Path, corpus: Path) -> None:
    run = Run(tmp_path, corpus)
    trainer = Trainer(run.config, run.splits, "cpu")
    before = (torch.get_rng_state().clone(), trainer.cursor.generator.get_state().clone())
    first = trainer.evaluate()
    assert trainer.evaluate() == first
    assert torch.equal(before[0], torch.get_rng_state())
    assert torch.equal(before[1], trainer.cursor.generator.get_state())

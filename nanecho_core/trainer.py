"""The training loop: budgets, evaluation, LR schedule, exact resume and graceful stops.

Exact resume rests on four rules:
- everything that decides the next step is in the checkpoint: weights, optimizer, the data
  cursor's generator, the global RNGs (dropout), the iteration count, the train-loss accumulator;
- the LR is a function of the global iteration only (schedule.py);
- evaluation draws from its own fixed batches in eval mode under fork_rng, so an extra eval at a
  session's end touches no training state;
- CPU kernels are run deterministically with the same thread count in every session.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nanecho_core.checkpoint import capture_rng, restore_rng
from nanecho_core.data import BatchCursor, Splits, eval_batches, eval_set_fingerprint
from nanecho_core.errors import NanechoError
from nanecho_core.malloc_tuning import retain_freed_memory
from nanecho_core.model import GPT, GPTConfig
from nanecho_core.pacing import Estimates, Progress
from nanecho_core.schedule import learning_rate
from nanecho_core.signals import StopRequest

if TYPE_CHECKING:
    from nanecho_core.distributed import Distributed

log = logging.getLogger(__name__)
SAVE_BYTES_PER_S = 100e6  # conservative disk speed for the first save-time estimate
# What torch, numpy and random raise for a checkpoint state of the wrong shape (a user error).
STATE_ERRORS = (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


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


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise NanechoError("--device cuda requested but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise NanechoError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return device


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop torch.compile's `_orig_mod.` and DDP's `module.` prefixes so checkpoints stay portable."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


class Trainer:
    """Owns the model, optimizer, data cursor and counters of one run on one device.

    With `dist` (several processes under torchrun) the model is wrapped in DDP, each rank trains
    on its slice of the same global batch, evals are sharded and combined exactly, and stops are
    agreed; see distributed.py. Without it, the single-process path is unchanged.
    """

    def __init__(
        self,
        config: dict[str, Any],
        splits: Splits,
        device: str = "cpu",
        *,
        record_losses: bool = False,
        clock: Callable[[], float] = time.monotonic,
        dist: Distributed | None = None,
    ) -> None:
        self.config = config
        retain_freed_memory()  # process-wide, once: no page faults for per-step tensors
        self.train_cfg = config["train"]
        self.device = device
        self.clock = clock
        self.dist = dist
        self.model_config = GPTConfig.from_mapping(config["model"])
        # CPU kernels used here are deterministic for a fixed thread count. We do not call
        # torch.use_deterministic_algorithms: it imports torch._inductor (~3 s of start-up per session).
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed = int(self.train_cfg["seed"])
        torch.manual_seed(seed)  # model init; dropout continues from here (restored on resume)
        self.raw_model = GPT(self.model_config).to(device)
        self.model: torch.nn.Module = self.raw_model
        if self.train_cfg.get("compile") and device == "cuda":
            self.model = torch.compile(self.raw_model)  # type: ignore[assignment]
        self.eval_model = self.model  # never the DDP wrapper: evals run no gradient collectives
        self.rows = slice(None)
        if dist is not None:
            self.rows = dist.rows(int(self.train_cfg["batch_size"]))
            self.model = dist.wrap(self.model)
        self.optimizer = self.raw_model.configure_optimizer(
            float(self.train_cfg["weight_decay"]),
            float(self.train_cfg["learning_rate"]),
            (float(self.train_cfg["beta1"]), float(self.train_cfg["beta2"])),
            device,
        )
        block = self.model_config.block_size
        batch = int(self.train_cfg["batch_size"])
        self.cursor = BatchCursor(splits.train, batch, block, seed)
        batches = eval_batches(splits.eval, batch, block, int(self.train_cfg["eval_iters"]))
        self.eval_fingerprint = eval_set_fingerprint(batches)
        self.eval_set = [(x.to(device), y.to(device)) for x, y in batches]
        self.iteration = 0
        self.tokens_seen = 0
        self.best_val_loss: float | None = None
        self.last_val_loss: float | None = None
        self.last_train_loss: float | None = None
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._loss_count = 0
        self.loss_history: list[torch.Tensor] | None = [] if record_losses else None
        self.tokens_per_iter = batch * block * int(self.train_cfg["grad_accum"])
        self.amp_dtype = torch.bfloat16 if device == "cuda" else None

    # ---- state ---------------------------------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """The parts of a checkpoint that decide the next step (the caller adds ids and metadata)."""
        return {
            "model": strip_prefixes(self.raw_model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "tokens_seen": self.tokens_seen,
            "best_val_loss": self.best_val_loss,
            "model_args": self.model_config.as_dict(),
            "cursor": self.cursor.state(),
            "rng": capture_rng(),
            "train_accumulator": {"loss_sum": float(self._loss_sum.item()), "count": self._loss_count},
            "last_val_loss": self.last_val_loss,
        }

    def load_weights(self, state: dict[str, Any], where: str) -> None:
        try:
            self.raw_model.load_state_dict(strip_prefixes(state["model"]))
        except STATE_ERRORS as exc:
            # The whole message (one line): torch's first line alone never names the tensor or shapes.
            detail = " ".join(str(exc).split())[:500] or type(exc).__name__
            raise NanechoError(f"checkpoint weights do not fit the model: {detail}", where) from exc

    def restore(self, state: dict[str, Any], where: str) -> None:
        """Continue exactly where `state` stopped (weights, optimizer, cursor, RNGs, counters)."""
        self.load_weights(state, where)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.cursor.load_state(state["cursor"])
            self.iteration = int(state["iteration"])
            self.tokens_seen = int(state["tokens_seen"])
            best = state.get("best_val_loss")
            self.best_val_loss = None if best is None else float(best)
            last = state.get("last_val_loss")
            self.last_val_loss = None if last is None else float(last)
            acc = state.get("train_accumulator") or {"loss_sum": 0.0, "count": 0}
            self._loss_sum = torch.tensor(float(acc["loss_sum"]), dtype=torch.float64, device=self.device)
            self._loss_count = int(acc["count"])
            restore_rng(state["rng"])
        except STATE_ERRORS as exc:
            raise NanechoError(
                f"checkpoint training state is unusable: {type(exc).__name__}: {exc}", where
            ) from exc

    # ---- one step, one eval --------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def lr_at(self, iteration: int) -> float:
        cfg = self.train_cfg
        return learning_rate(
            iteration,
            learning_rate=float(cfg["learning_rate"]),
            min_lr=float(cfg["min_lr"]),
            warmup_iters=int(cfg["warmup_iters"]),
            lr_decay_iters=int(cfg["lr_decay_iters"]),
        )

    def _sync_grads(self, last_micro_step: bool) -> contextlib.AbstractContextManager[Any]:
        if self.dist is None:
            return contextlib.nullcontext()
        return self.dist.no_sync(self.model, last_micro_step)

    def train_one_iteration(self) -> torch.Tensor:
        """One optimizer step at the current global iteration; returns the loss (no host sync)."""
        lr = self.lr_at(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = int(self.train_cfg["grad_accum"])
        if self.dist is not None:
            self.dist.seed_dropout(int(self.train_cfg["seed"]), self.iteration)
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            x, y = self.cursor.next_batch()
            if self.dist is not None:  # every rank draws the global batch; trains on its rows
                x, y = x[self.rows], y[self.rows]
            if self.device != "cpu":
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self._sync_grads(micro == accum - 1):
                with self._autocast():
                    _, loss = self.model(x, y)
                assert loss is not None
                loss = loss / accum
                loss.backward()
            total = total + loss.detach().float()
        if self.dist is not None:
            total = self.dist.mean(total)  # the global batch's loss, the same on every rank
        clip = float(self.train_cfg["grad_clip"])
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        self.tokens_seen += self.tokens_per_iter
        self._loss_sum += total
        self._loss_count += 1
        if self.loss_history is not None:
            self.loss_history.append(total)
        return total

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed eval batches; touches no training RNG or data cursor."""
        devices = [torch.cuda.current_device()] if self.device == "cuda" else []
        rank, world = (0, 1) if self.dist is None else (self.dist.rank, self.dist.world_size)
        with torch.random.fork_rng(devices=devices):
            self.eval_model.eval()
            losses = torch.zeros(len(self.eval_set), device=self.device)
            for k, (x, y) in enumerate(self.eval_set):
                if k % world != rank:  # ranks share the fixed eval batches; combined exactly below
                    continue
                with self._autocast():
                    _, loss = self.eval_model(x, y)
                assert loss is not None
                losses[k] = loss.float()
            self.eval_model.train()
        if self.dist is not None:
            losses = self.dist.combine_disjoint(losses)
        return float(losses.mean().item())

    def mean_train_loss(self) -> float | None:
        return float(self._loss_sum.item()) / self._loss_count if self._loss_count else None

    # ---- the session loop ----------------------------------------------------------------------

    def run(
        self,
        budget: Budget,
        save: Callable[[Trainer], None],
        *,
        stop: StopRequest | None = None,
        started: float | None = None,
    ) -> SessionOutcome:
        """Train until the budget or a signal says stop; eval on schedule and at the end; save."""
        started = self.clock() if started is None else started
        deadline = None if budget.max_minutes is None else started + budget.max_minutes * 60.0
        start_iteration = self.iteration
        target = budget.target(start_iteration)
        interval = int(self.train_cfg["eval_interval"])
        log_interval = int(self.train_cfg["log_interval"])
        outcome = SessionOutcome(start_iteration, start_iteration, "budget_iters")
        self.model.train()
        timer = Estimates(self._first_save_estimate(), len(self.eval_set))
        last_saved = start_iteration
        last_eval = start_iteration if self.last_val_loss is not None else None
        if self.iteration == 0 and self.last_val_loss is None:
            self._scheduled_eval(outcome, timer, save=None)
            last_eval = 0
        progress = Progress(start_iteration, target)
        if self.dist is not None and not self.dist.is_main:
            progress.enabled = False  # one bar, rank 0's
        window_start, window_iters = self.clock(), 0
        with progress:
            while self.iteration < target:
                reason = self._stop_reason(stop, deadline, timer)
                if self.dist is not None:  # all ranks stop after the same iteration
                    reason = self.dist.agree_stop(reason, self.iteration)
                if reason is not None:
                    outcome.stop_reason = reason
                    break
                t0 = self.clock()
                loss = self.train_one_iteration()
                elapsed = self.clock() - t0
                timer.observe_iteration(elapsed)
                outcome.max_iteration_s = max(outcome.max_iteration_s, elapsed)
                outcome.train_seconds += elapsed
                outcome.tokens_trained += self.tokens_per_iter
                window_iters += 1
                if self.iteration % log_interval == 0 or self.iteration == target:
                    now = self.clock()
                    rate = window_iters * self.tokens_per_iter / max(now - window_start, 1e-9)
                    eta = (target - self.iteration) * timer.iteration
                    if deadline is not None:
                        eta = min(eta, max(0.0, deadline - now))
                    log.info(
                        "iter %d/%d loss %.4f lr %.2e %.0f tok/s elapsed %.1fs eta %.1fs",
                        self.iteration,
                        target,
                        float(loss.item()),
                        self.lr_at(self.iteration - 1),
                        rate,
                        now - started,
                        eta,
                    )
                    progress.update(self.iteration)
                    window_start, window_iters = now, 0
                if self.iteration % interval == 0:
                    if self._scheduled_eval(outcome, timer, save=save):
                        last_saved = self.iteration
                    last_eval = self.iteration
        outcome.end_iteration = self.iteration
        if self.iteration > start_iteration:
            if last_eval != self.iteration:
                t0 = self.clock()
                val = self.evaluate()
                timer.eval = self.clock() - t0
                # Not a scheduled eval: the accumulator keeps running so the next scheduled train_loss
                # is the same as in an uninterrupted run.
                outcome.eval_points.append(EvalPoint(self.iteration, val, self.mean_train_loss(), False))
                self._record_val(val)
            if last_saved != self.iteration:
                self._timed_save(save, timer, outcome)
        return outcome

    def _stop_reason(self, stop: StopRequest | None, deadline: float | None, timer: Estimates) -> str | None:
        if stop is not None and stop.requested:
            return "signal"
        if deadline is not None:
            # One iteration, then either its scheduled eval (+ save) or the end eval + save.
            need = 1.1 * (timer.iteration + timer.eval + timer.save) + 0.05
            if self.clock() + need > deadline:
                return "budget_time"
        return None

    def _record_val(self, val: float) -> bool:
        check_finite(val, f"val loss at iteration {self.iteration}")
        self.last_val_loss = val
        improved = self.best_val_loss is None or val < self.best_val_loss
        if improved:
            self.best_val_loss = val
        return improved

    def _scheduled_eval(
        self, outcome: SessionOutcome, timer: Estimates, save: Callable[[Trainer], None] | None
    ) -> bool:
        t0 = self.clock()
        val = self.evaluate()
        timer.eval = self.clock() - t0
        train_loss = self.mean_train_loss()
        self.last_train_loss = train_loss
        self._loss_sum.zero_()
        self._loss_count = 0
        outcome.eval_points.append(EvalPoint(self.iteration, val, train_loss, True))
        log.info("eval at iter %d: val_loss %.4f train_loss %s", self.iteration, val, _fmt(train_loss))
        if self._record_val(val) and save is not None and self.iteration > outcome.start_iteration:
            self._timed_save(save, timer, outcome)
            return True
        return False

    def _timed_save(self, save: Callable[[Trainer], None], timer: Estimates, outcome: SessionOutcome) -> None:
        t0 = self.clock()
        if self.dist is None or self.dist.is_main:  # rank 0 alone writes
            save(self)
        timer.save = self.clock() - t0
        outcome.max_save_s = max(outcome.max_save_s, timer.save)

    def _first_save_estimate(self) -> float:
        n_bytes = sum(p.numel() * p.element_size() for p in self.raw_model.parameters()) * 3
        return 0.05 + n_bytes / SAVE_BYTES_PER_S


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def check_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise NanechoError(f"{what} is not finite ({value}); lower the learning rate")
    return value

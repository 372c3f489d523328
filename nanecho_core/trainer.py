"""The Trainer: model, optimizer, one training step, evaluation, and the state that resumes exactly.

When to step, evaluate, save and stop (budgets, signals) is session_loop.py's; Trainer.run
hands over to it. Exact resume rests on four rules:
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
from typing import TYPE_CHECKING, Any

import torch

from nanecho_core import env
from nanecho_core.checkpoint import capture_rng, restore_rng
from nanecho_core.cpu_engine import ENGINES, Products, eval_loss, forward_backward, resolve_engine
from nanecho_core.data import BatchCursor, Splits, eval_batches, eval_set_fingerprint
from nanecho_core.errors import NanechoError
from nanecho_core.malloc_tuning import retain_freed_memory
from nanecho_core.model import GPT, GPTConfig
from nanecho_core.schedule import learning_rate
from nanecho_core.session_loop import Budget, SessionOutcome, run_session
from nanecho_core.signals import StopRequest

if TYPE_CHECKING:
    from nanecho_core.distributed import Distributed

log = logging.getLogger(__name__)

# What torch, numpy and random raise for a checkpoint state of the wrong shape (a user error).
STATE_ERRORS = (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


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
        # The hand-written CPU step (cpu_engine.py) where it applies, else autograd.
        self.engine = resolve_engine(env.cpu_engine(), self.raw_model, device, dist is not None)
        self._products = Products(onednn=self.engine == "onednn")
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
            "engine": self.engine,
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
        trained_with = state.get("engine", "autograd")  # checkpoints from before the CPU step: autograd
        if trained_with != self.engine:
            shown = trained_with if trained_with in ENGINES else "another"
            log.warning(
                "%s was trained with the %s step, this session uses the %s step: it continues "
                "correctly, but not bit-identically to a run that never switched (NANECHO_CPU_ENGINE)",
                where,
                shown,
                self.engine,
            )

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
            if self.engine != "autograd":
                loss = forward_backward(self.raw_model, x, y, self._products, scale=1.0 / accum)
            else:
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
                if self.engine != "autograd":
                    loss = eval_loss(self.raw_model, x, y, self._products)
                else:
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

    def take_train_loss(self) -> float | None:
        """The mean training loss since the last scheduled eval; starts the next window."""
        train_loss = self.mean_train_loss()
        self.last_train_loss = train_loss
        self._loss_sum.zero_()
        self._loss_count = 0
        return train_loss

    def record_val(self, val: float) -> bool:
        """Keep a measured val loss; returns whether it is the best so far."""
        check_finite(val, f"val loss at iteration {self.iteration}")
        self.last_val_loss = val
        improved = self.best_val_loss is None or val < self.best_val_loss
        if improved:
            self.best_val_loss = val
        return improved

    def run(
        self,
        budget: Budget,
        save: Callable[[Trainer], None],
        *,
        stop: StopRequest | None = None,
        started: float | None = None,
    ) -> SessionOutcome:
        """Train until the budget or a signal says stop; eval on schedule and at the end; save."""
        return run_session(self, budget, save, stop=stop, started=started)


def check_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise NanechoError(f"{what} is not finite ({value}); lower the learning rate")
    return value

"""Several processes, one run: torchrun environment, process group, batch sharding, agreed stops.

The rules that keep a multi-process run world-size independent:
- the global batch is the config's `batch_size`; every rank draws the *same* global batch from
  the same data cursor and trains on its own contiguous slice of rows, so the cursor state (and
  the whole checkpoint) is the same on every rank and means the same for any world size;
- DDP averages gradients over ranks: the mean over the global batch, as in one process, up to the
  order of floating-point sums;
- every collective is called by every rank at the same point of the loop: the stop decision is
  agreed by an all_reduce (MAX) of a per-rank stop code once per iteration, so a signal or a
  time budget seen by one rank stops all of them after the same iteration;
- rank 0's RNG is the one checkpoints hold; ranks > 0 derive their dropout stream from
  (seed, iteration, rank) at every step, so nothing per-rank needs saving;
- teardown has no barrier: each rank destroys its group when its own loop is done (rank 0 may
  still be saving; nothing waits on it).

Only the environment helpers run without torch; everything else imports it lazily, so this module
costs nothing to a tool that only asks whether it is rank 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from nanecho_core.errors import NanechoError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
# Stop codes, in priority order: the agreed reason is the highest any rank voted for.
STOP_CODES: tuple[str | None, ...] = (None, "budget_time", "signal")
_GOLDEN = 0x9E3779B97F4A7C15  # spreads rank numbers over the seed space


@dataclass(frozen=True)
class WorldEnv:
    """The torchrun variables of this process (1 process, rank 0 when torchrun did not start it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise NanechoError(f"environment variable {name}={text!r} is not an integer") from None


def world_from_env() -> WorldEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them, validated."""
    world = WorldEnv(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if world.world_size < 1 or not 0 <= world.rank < world.world_size or world.local_rank < 0:
        raise NanechoError(
            f"inconsistent torchrun environment: RANK={world.rank} WORLD_SIZE={world.world_size} "
            f"LOCAL_RANK={world.local_rank}"
        )
    return world


def is_main_process() -> bool:
    """True in rank 0 (and in a plain single process): the one process that writes and prints."""
    return world_from_env().rank == 0


def backend_for(device: str) -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if device == "cuda" else "gloo"


def check_divisible(batch_size: int, world_size: int) -> int:
    """Rows per rank; the global batch must split evenly (so every rank's slice has the same size)."""
    if batch_size % world_size:
        raise NanechoError(
            f"train.batch_size {batch_size} is not divisible by the {world_size} processes: "
            "the global batch is split evenly across ranks; choose a multiple of the process count"
        )
    return batch_size // world_size


class Distributed:
    """This process's place in an initialised process group, and the collectives the trainer uses."""

    def __init__(self, world: WorldEnv, backend: str, device: str) -> None:
        self.rank = world.rank
        self.world_size = world.world_size
        self.local_rank = world.local_rank
        self.backend = backend
        self.device = device  # where collective tensors live (nccl needs them on the GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's contiguous slice of the global batch's rows."""
        per_rank = check_divisible(batch_size, self.world_size)
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def agree_stop(self, local: str | None, iteration: int) -> str | None:
        """The stop reason all ranks act on: the highest-priority reason any rank voted for."""
        import torch
        import torch.distributed as dist

        code = torch.tensor([STOP_CODES.index(local)], dtype=torch.int64, device=self.device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        agreed = STOP_CODES[int(code.item())]
        if agreed is not None:
            log.warning(
                "rank %d/%d: stopping after iteration %d (%s)", self.rank, self.world_size, iteration, agreed
            )
        return agreed

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over ranks (gloo has no AVG: sum, then divide)."""
        import torch.distributed as dist

        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def combine_disjoint(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of per-rank vectors where each position was filled by one rank (zeros elsewhere).

        x + 0.0 == x exactly, so the result is bit-identical to one process computing every entry.
        """
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around the (possibly compiled) model."""
        from torch.nn.parallel import DistributedDataParallel

        if self.device == "cuda":
            return DistributedDataParallel(model, device_ids=[self.local_rank])
        return DistributedDataParallel(model)

    def no_sync(
        self, model: torch.nn.Module, last_micro_step: bool
    ) -> contextlib.AbstractContextManager[Any]:
        """Skip DDP's gradient all-reduce on every grad-accumulation micro-step but the last."""
        no_sync = getattr(model, "no_sync", None)
        if last_micro_step or no_sync is None:
            return contextlib.nullcontext()
        return cast("contextlib.AbstractContextManager[Any]", no_sync())

    def seed_dropout(self, seed: int, iteration: int) -> None:
        """Rank r > 0: a dropout stream that is a pure function of (seed, iteration, rank).

        Rank 0 keeps the global RNG it saves in checkpoints (so a resume on one process continues
        it); the others reseed before every iteration, so their masks differ from rank 0's and a
        resume at any iteration, on any world size, draws the same masks as an uninterrupted run.
        """
        import torch

        if self.rank == 0:
            return
        mixed = (seed * 1_000_003 + iteration) ^ (self.rank * _GOLDEN)
        torch.manual_seed(mixed & (2**63 - 1))


def init_from_env(device: str) -> Distributed | None:
    """Join the process group torchrun describes; None for a single process (nothing initialised)."""
    world = world_from_env()
    if world.world_size == 1:
        return None
    import torch
    import torch.distributed as dist

    backend = backend_for(device)
    if device == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise NanechoError(
                f"LOCAL_RANK {world.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "use --nproc-per-node <= the GPUs per node"
            )
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        _check_rendezvous()
        try:
            dist.init_process_group(backend=backend, rank=world.rank, world_size=world.world_size)
        except (ValueError, RuntimeError) as exc:  # torch's rendezvous errors (DistError is one)
            detail = " ".join(str(exc).split())[:300]
            raise NanechoError(f"cannot join the process group: {detail}") from exc
    log.debug("rank %d/%d joined the %s group", world.rank, world.world_size, backend)
    return Distributed(world, backend, device)


def _check_rendezvous() -> None:
    """MASTER_ADDR and MASTER_PORT, which torchrun sets: missing or malformed, torch raised a traceback."""
    if not os.environ.get("MASTER_ADDR"):
        raise NanechoError("WORLD_SIZE > 1 but MASTER_ADDR is not set: start the ranks with torchrun")
    port = os.environ.get("MASTER_PORT", "")
    if not (re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
        raise NanechoError(f"MASTER_PORT must be a port number (1-65535), got {port!r}")


def teardown(ctx: Distributed | None) -> None:
    """Leave the process group without a barrier (a rank that is done never waits for the others)."""
    if ctx is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device_option: str) -> Iterator[Distributed | None]:
    """init_from_env ... teardown, also on errors and signals; None (and no torch) for one process.

    `device_option` is train-step's --device (auto, cpu, cuda); only rank 0 logs progress.
    """
    if world_from_env().world_size == 1:
        yield None
        return
    from nanecho_core.trainer import resolve_device

    ctx = init_from_env(resolve_device(device_option))
    if ctx is not None and not ctx.is_main:
        logging.getLogger("nanecho_core").setLevel(logging.WARNING)
    try:
        yield ctx
    finally:
        teardown(ctx)

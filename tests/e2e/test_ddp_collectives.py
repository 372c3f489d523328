"""distributed.py's collectives between 2 real gloo processes joined from torchrun-style variables."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    import torch

    from nanecho_core import distributed

    with distributed.process_group("cpu") as ctx:
        assert ctx is not None
        votes = {0: [None, "budget_time", None, "budget_time"], 1: [None, None, "signal", "signal"]}[rank]
        agreed = [ctx.agree_stop(vote, 7) for vote in votes]
        losses = torch.zeros(5)
        for k in range(rank, 5, 2):
            losses[k] = 1.0 / (k + 3)  # values whose sums would round differently
        combined = ctx.combine_disjoint(losses)
        mean = ctx.mean(torch.tensor(float(rank + 1)))
        result = {
            "backend": ctx.backend,
            "rows": [ctx.rows(8).start, ctx.rows(8).stop],
            "agreed": agreed,
            "combined": combined.tolist(),
            "mean": float(mean),
        }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


def test_two_gloo_ranks_agree_on_stops_and_combine_evals_exactly(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    exact = [1.0 / (k + 3) for k in range(5)]
    import torch

    exact_f32 = torch.tensor(exact).tolist()
    for rank, result in enumerate(results):
        assert result["backend"] == "gloo"
        assert result["rows"] == [4 * rank, 4 * rank + 4]
        # The highest-priority vote of any rank wins, on every rank.
        assert result["agreed"] == [None, "budget_time", "signal", "signal"]
        assert result["combined"] == exact_f32  # bit-identical to one process filling every entry
        assert result["mean"] == 1.5

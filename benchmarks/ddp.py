"""1 process vs 2 processes (torchrun, gloo, DDP) training tokens/s on this machine.

    .venv/bin/python benchmarks/ddp.py [ITERS]        (just bench-ddp)

Runs the real train-step on the `ci` preset's model (nanoGPT's CPU config: 4 layers, 4 heads, 128
dims, block 64, global batch 12) for ITERS iterations (default 100): one process with torch's
default thread count (one per core), one process with 1 thread, `torchrun --nproc-per-node 2`
(torchrun sets OMP_NUM_THREADS=1 per worker), then one process again (these boxes are noisy and
often shared: every run is shown, with the load average before and after).
tokens/s is train-step's own figure (step.json `tokens_per_s`: global tokens over rank 0's
training seconds, gradient all-reduce waits included; start-up, evals and saves excluded).
The same global batch is trained in every mode, so the figures compare like for like.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_STEP = str(Path(sys.executable).parent / "train-step")


def session(root: Path, nproc: int, iters: int, tag: str, threads: int | None = None) -> dict[str, float]:
    out = root / f"{tag}.json"
    args = [
        "--root", str(root), "--run", f".training-progress/bench-{tag}", "--preset", "ci",
        "--device", "cpu", "--iters", str(iters), "--eval-interval", str(10 * iters), "--out", str(out),
    ]  # fmt: skip
    if nproc == 1:
        argv = [TRAIN_STEP, *args]
    else:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
        ]
        argv = [*launcher, "--", TRAIN_STEP, *args]
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GITHUB_OUTPUT")
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:6])} … failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    record = json.loads(out.read_text())
    assert record["world_size"] == nproc and record["end_iteration"] == iters
    return {"tokens_per_s": float(record["tokens_per_s"]), "wall_s": wall}


def main() -> None:
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import torch

    print(
        f"ci model, global batch 12 x 64 tokens, {iters} iterations, {cores} cores, torch {torch.__version__}"
    )
    print(f"(load average before: {os.getloadavg()[0]:.2f})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = [
            ("1 process", session(root, 1, iters, "one-a")),
            ("1 process, 1 thread", session(root, 1, iters, "one-t1", threads=1)),
            ("2 processes (gloo)", session(root, 2, iters, "two")),
            ("1 process (again)", session(root, 1, iters, "one-b")),
        ]
    single = max(runs[0][1]["tokens_per_s"], runs[3][1]["tokens_per_s"])
    print(f"{'mode':<24}{'tokens/s':>12}{'vs 1 process':>14}{'session wall s':>16}")
    for name, result in runs:
        ratio = result["tokens_per_s"] / single
        print(f"{name:<24}{result['tokens_per_s']:>12.0f}{ratio:>13.2f}x{result['wall_s']:>16.1f}")
    print(f"(load average after: {os.getloadavg()[0]:.2f}; ratios against the faster 1-process run)")


if __name__ == "__main__":
    main()

"""Checkpoint save+load time vs a raw write+read (with fsync) of the same bytes.

    .venv/bin/python benchmarks/ckpt_io.py [PRESET ...]

For each preset's model (default: ci and full) it builds the real checkpoint dict (weights,
AdamW state after one step, RNGs, cursor), then times save_checkpoint (hash while writing, fsync,
rename, dir fsync) + load_checkpoint (sha256 verify + weights_only load) against writing the
same bytes to a temp file with fsync + rename and reading them back. Goal: ratio <= 1.5.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 7


def raw_write_read(data: bytes, path: Path) -> float:
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    back = path.read_bytes()
    elapsed = time.perf_counter() - t0
    assert len(back) == len(data)
    return elapsed


def bench(preset: str) -> None:
    from nanecho_core.checkpoint import load_checkpoint, save_checkpoint
    from nanecho_core.data import load_splits
    from nanecho_core.presets import resolve_config
    from nanecho_core.trainer import Trainer

    config = resolve_config(preset, {"train": {"eval_iters": 1}})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        splits = load_splits(None, root / "cache", 0.1, config["model"]["block_size"])
        trainer = Trainer(config, splits, "cpu")
        trainer.train_one_iteration()  # populate AdamW moments
        state = {"format": "nanecho-checkpoint/1", "id": "x", "config": config, "fingerprints": {}}
        state.update(trainer.training_state())
        ours, raw = [], []
        for i in range(REPEATS):
            path = root / f"ours{i}.pt"
            t0 = time.perf_counter()
            sha, size = save_checkpoint(state, path)
            load_checkpoint(path, sha)
            ours.append(time.perf_counter() - t0)
            raw.append(raw_write_read(path.read_bytes(), root / f"raw{i}.bin"))
        o, r = statistics.median(ours), statistics.median(raw)
        print(
            f"{preset}: {size / 1e6:.1f} MB, save+load {o * 1000:.1f} ms, raw write+fsync+read "
            f"{r * 1000:.1f} ms, ratio {o / r:.2f}x"
        )


def main() -> None:
    for preset in sys.argv[1:] or ["ci", "full"]:
        bench(preset)


if __name__ == "__main__":
    main()

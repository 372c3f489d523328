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

REPEATS = 15


def raw_write_read(data: bytes, path: Path) -> tuple[float, float]:
    """(write, read) seconds: write + fsync + rename + directory fsync, then read back."""
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
    t1 = time.perf_counter()
    back = path.read_bytes()
    t2 = time.perf_counter()
    assert len(back) == len(data)
    return t1 - t0, t2 - t1


def bench(preset: str) -> None:
    from nanecho_core.checkpoint import FORMAT, load_checkpoint, save_checkpoint
    from nanecho_core.data import load_splits
    from nanecho_core.presets import resolve_config
    from nanecho_core.trainer import Trainer

    config = resolve_config(preset, {"train": {"eval_iters": 1}})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        splits = load_splits(None, root / "cache", 0.1, config["model"]["block_size"])
        trainer = Trainer(config, splits, "cpu")
        trainer.train_one_iteration()  # populate AdamW moments
        state = {"format": FORMAT, "id": "x", "config": config, "fingerprints": {}}
        state.update(trainer.training_state())
        save, load, write, read = [], [], [], []
        for i in range(REPEATS):
            path = root / f"ours{i}.pt"
            t0 = time.perf_counter()
            sha, size = save_checkpoint(state, path)
            t1 = time.perf_counter()
            load_checkpoint(path, sha)
            save.append(t1 - t0)
            load.append(time.perf_counter() - t1)
            w, r = raw_write_read(path.read_bytes(), root / f"raw{i}.bin")
            write.append(w)
            read.append(r)
        ms = {
            name: statistics.median(v) * 1000
            for name, v in (("save", save), ("load", load), ("write", write), ("read", read))
        }
        ours, raw = ms["save"] + ms["load"], ms["write"] + ms["read"]
        print(
            f"{preset}: {size / 1e6:.1f} MB, save+load {ours:.1f} ms (save {ms['save']:.1f}, load "
            f"{ms['load']:.1f}), raw write+fsync+read {raw:.1f} ms (write {ms['write']:.1f}, read "
            f"{ms['read']:.1f}), ratio {ours / raw:.2f}x, fixed overhead {ours - raw:.1f} ms"
        )


def main() -> None:
    for preset in sys.argv[1:] or ["ci", "full"]:
        bench(preset)


if __name__ == "__main__":
    main()

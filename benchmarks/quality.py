"""Quality on tinyshakespeare: 2000 iterations of nanoGPT's CPU config, one session vs 4 resumed.

    .venv/bin/python benchmarks/quality.py [TOTAL] [SESSIONS] [DEVICE]

Runs train-step's core (the same code path as the CLI, in-process) on the bundled corpus with the
`ci` preset's model (4 layers, 4 heads, 128 dims, block 64, batch 12, dropout 0,
lr_decay_iters 2000): once as one session of TOTAL iterations, once as SESSIONS sessions chained
through real checkpoints and selection documents. Prints the final val loss of both (goal
<= 1.88), whether the final weights are bit-identical, and the wall time.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from nanecho_core.train_session import TrainRequest, run_train_step

RUN = ".training-progress/nanecho-quality"


def selection(entry: dict, resume_path: str) -> dict:
    return {
        "schema_version": 1,
        "run": "nanecho-quality",
        "source": "cache",
        "chosen": entry,
        "resume_path": resume_path,
        "reason": "latest checkpoint of the previous session",
        "rejected": [],
        "regression": False,
        "allow_fresh": False,
        "metric": "val_loss",
        "mode": "min",
    }


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    import torch

    from nanecho_core.checkpoint import load_checkpoint

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "one").mkdir()
        (root / "split").mkdir()
        t0 = time.monotonic()
        one = run_train_step(TrainRequest(root=root / "one", run=Path(RUN), device=device, iters=total))
        one_s = time.monotonic() - t0
        print(
            f"one session: {total} iterations, val_loss {one['end_val_loss']:.4f}, {one_s:.0f} s", flush=True
        )

        split_root = root / "split"
        records = []
        t0 = time.monotonic()
        for k in range(sessions):
            resume = None
            if records:
                last = records[-1]["checkpoints"][-1]
                resume = split_root / f"sel{k}.json"
                resume.write_text(json.dumps(selection(last, f"{RUN}/{last['file']}")))
            until = total * (k + 1) // sessions
            req = TrainRequest(root=split_root, run=Path(RUN), device=device, resume=resume, until_iter=until)
            records.append(run_train_step(req))
            r = records[-1]
            print(
                f"  session {k + 1}: {r['start_iteration']} -> {r['end_iteration']}, "
                f"val_loss {r['end_val_loss']:.4f}, {r['wall_s']:.0f} s",
                flush=True,
            )
        split_s = time.monotonic() - t0
        print(f"{sessions} sessions: val_loss {records[-1]['end_val_loss']:.4f}, {split_s:.0f} s")

        a = load_checkpoint(root / "one" / RUN / one["checkpoints"][-1]["file"], None)["model"]
        b = load_checkpoint(split_root / RUN / records[-1]["checkpoints"][-1]["file"], None)["model"]
        identical = all(torch.equal(a[k], b[k]) for k in a)
        print(f"final weights bit-identical: {identical}")
        print(f"best val_loss: one {one['best_val_loss']:.4f}, split {records[-1]['best_val_loss']:.4f}")
        curve = [(p[0], round(p[1], 4)) for p in one["eval_points"]]
        print(f"eval curve (one session): {curve}")


if __name__ == "__main__":
    main()

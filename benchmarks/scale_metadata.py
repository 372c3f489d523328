"""Scale benchmark: meta-update record, ckpt-select and validate on a run with 10,000 sessions and
10,000 checkpoint entries. Wall time per command includes interpreter start-up (a subprocess,
as the workflow runs it). Targets (issue #5): record and ckpt-select < 0.5 s, validate < 2 s.

    .venv/bin/python benchmarks/scale_metadata.py [--entries 10000] [--repeat 3] [--plateau]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nanecho_core.fsio import atomic_write_json, dumps_line  # noqa: E402
from nanecho_core.index import recompute  # noqa: E402
from nanecho_core.store import empty_index, run_paths, save_metadata  # noqa: E402
from tests.factories import make_entry, make_session  # noqa: E402

RUN = ".training-progress/nanecho-cached-ci"
BIN = Path(sys.executable).parent


def stamp(n: int) -> str:
    return f"2026-{1 + n // 40000 % 12:02d}-{1 + n // 1440 % 28:02d}T{n // 60 % 24:02d}:{n % 60:02d}:00Z"


def build(root: Path, count: int, plateau: bool = False) -> None:
    paths = run_paths(root, RUN)
    doc = empty_index(paths.name)
    lines = []
    parent = None
    paths.checkpoints_dir.mkdir(parents=True)
    for n in range(count):
        sid = f"2026{n:08d}-{n:06x}"[:8] + f"T{n:06d}Z-{n % 0xFFFFFF:06x}"
        # --plateau: the best is entry 100 and the lineage trains on without beating it, so
        # ckpt-select and prune follow 9,900 descendants to the head (their worst case).
        loss = (0.9 if n == 100 else 1.05 + n / count / 100) if plateau else 3.0 - n / (count * 2)
        entry = make_entry(sid, 100 * (n + 1), loss, parent_id=parent, created_at=stamp(n))
        parent = entry["id"]
        doc["checkpoints"].append(entry)
        payload = f"weights of {entry['id']}".encode()
        (paths.dir / entry["file"]).write_bytes(payload)  # bulk setup: no fsync per file
        (paths.dir / entry["file"]).with_suffix(".json").write_text(json.dumps(entry))
        session = make_session(
            sid, 100 * n, 100 * (n + 1), resumed_from=entry["parent_id"], resume_source="cache"
        )
        lines.append(dumps_line(session))
    save_metadata(paths, recompute(doc))
    paths.sessions.write_text("\n".join(lines) + "\n")


CPU: dict[str, list[float]] = {}


def script(name: str) -> list[str]:
    """The console script, or `python -m` where the package is on PYTHONPATH but not installed."""
    installed = BIN / name
    if installed.exists():
        return [str(installed)]
    return [sys.executable, "-m", f"nanecho_tools.{name.replace('-', '_')}"]


def timed(cmd: list[str], label: str = "") -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.setdefault(label, []).append(cpu)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plateau", action="store_true", help="best early, 9,900 later checkpoints")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build(root, args.entries, args.plateau)
        meta = root / RUN / "cache/metadata.json"
        print(f"built {args.entries} sessions + entries in {time.perf_counter() - t0:.1f} s; "
              f"metadata.json {meta.stat().st_size / 1e6:.1f} MB")  # fmt: skip
        base = ["--root", str(root), "--run", RUN]
        baseline = statistics.median(
            timed([sys.executable, "-c", "pass"], "baseline") for _ in range(args.repeat)
        )
        results: dict[str, list[float]] = {
            "record": [],
            "record (cold: unverified)": [],
            "ckpt-select (cold: fresh clone)": [],
            "ckpt-select": [],
            "validate": [],
        }
        for n in range(args.repeat):
            for kind in ("record", "record (cold: unverified)"):
                i = args.entries + 2 * n + (kind != "record")
                sid = f"20270101T{i:06d}Z-ffffff"
                entry = make_entry(
                    sid, 100 * (i + 1), 1.0, created_at=f"2027-01-01T00:00:{2 * n + (kind != 'record'):02d}Z"
                )
                (root / RUN / entry["file"]).write_bytes(f"weights of {entry['id']}".encode())
                step = root / f"step-{sid}.json"
                atomic_write_json(step, make_session(sid, 100 * i, 100 * (i + 1), checkpoints=[entry]))
                if kind != "record":
                    (root / RUN / ".metadata.verified").unlink(missing_ok=True)
                results[kind].append(timed([*script("meta-update"), "record", str(step), *base], kind))
            sel = ["--out", str(root / "sel.json")]
            (root / RUN / ".metadata.verified").unlink(missing_ok=True)  # a fresh CI clone
            cold = "ckpt-select (cold: fresh clone)"
            results[cold].append(timed([*script("ckpt-select"), *base, *sel], cold))
            results["ckpt-select"].append(timed([*script("ckpt-select"), *base, *sel], "ckpt-select"))
            results["validate"].append(timed([*script("meta-update"), "validate", *base], "validate"))
        limits = {
            "record": 0.5,
            "record (cold: unverified)": None,
            "ckpt-select (cold: fresh clone)": None,
            "ckpt-select": 0.5,
            "validate": 2.0,
        }
        load = os.getloadavg()[0]
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f}; python {sys.version.split()[0]}")
        print(f"baseline python -c pass: {baseline:.3f} s")
        for name, values in results.items():
            med = statistics.median(values)
            limit = limits[name]
            verdict = (
                ""
                if limit is None
                else f"  limit {limit:.1f} s: {'OK' if med < limit else 'OVER'} ({med / limit:.2f}x)"
            )
            print(
                f"{name:<26} wall median {med:.3f} s  min {min(values):.3f} s  "
                f"cpu {statistics.median(CPU[name]):.3f} s  ({med / baseline:.1f}x baseline){verdict}"
            )
        sel = json.loads((root / "sel.json").read_text())
        print(
            f"ckpt-select chose {sel['chosen']['id']} with {len(sel['rejected'])} rejected candidates listed"
        )
        digest = hashlib.sha256(meta.read_bytes()).hexdigest()[:12]
        print(f"final metadata.json sha256 {digest}")


if __name__ == "__main__":
    main()

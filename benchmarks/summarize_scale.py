"""summarize at scale: 10,000 sessions across 3 runs, every output, against the 2 s budget.

    .venv/bin/python benchmarks/summarize_scale.py [--sessions 10000] [--repeat 3]

Builds a repository with three runs (ci, scheduled, full) whose sessions.jsonl hold `--sessions`
records in total (with eval curves, resets and regressions), then times, in a fresh process each,
the whole `summarize` CLI: training_summary.json per run, PROGRESS.md, the README block, the step
summary and the HTML dashboard. Prints the time as a ratio of the 2 s budget and the output sizes,
which must not grow with the number of sessions (charts downsample; tables show the last N).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nanecho_core.fsio import atomic_write_json, atomic_write_text, dumps_line  # noqa: E402
from tests.factories import make_entry, make_session  # noqa: E402

BUDGET_S = 2.0
RUN_SHARES = {"nanecho-cached-ci": 0.6, "nanecho-cached-scheduled": 0.3, "nanecho-cached-full": 0.1}
ITERS = {"nanecho-cached-ci": 300, "nanecho-cached-scheduled": 2000, "nanecho-cached-full": 5000}
# as the presets evaluate (every 100 / 100 / 250 iterations): 3, 20 and 20 eval points a session
EVAL_INTERVAL = {"nanecho-cached-ci": 100, "nanecho-cached-scheduled": 100, "nanecho-cached-full": 250}
README = "# Demo\n\nIntro.\n\n<!-- nanecho:progress:start -->\n<!-- nanecho:progress:end -->\n\nOutro.\n"


def build_run(root: Path, run: str, count: int, every_reset: int = 97) -> None:
    """`count` sessions: each resumes the last (a reset every `every_reset`), evals as the preset makes."""
    run_dir = root / ".training-progress" / run
    preset = run.rsplit("-", 1)[-1]
    iters = ITERS[run]
    start_time = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    lines: list[str] = []
    entries: list[dict[str, Any]] = []
    iteration, previous_id = 0, None
    for n in range(count):
        session_id = f"{(start_time + dt.timedelta(hours=n)).strftime('%Y%m%dT%H%M%SZ')}-{n % 0xFFFFFF:06x}"
        fresh = n == 0 or n % every_reset == 0
        start = 0 if fresh else iteration
        end = start + iters
        loss = lambda it: 1.4 + 4.1 / (1 + it / 400)  # noqa: E731 - a plausible loss curve
        record = make_session(
            session_id,
            start,
            end,
            run=run,
            resumed_from=None if fresh else previous_id,
            resume_source="fresh" if fresh else ("cache" if n % 5 else "artifact"),
            start_val_loss=None if fresh else round(loss(start), 4),
            end_val_loss=round(loss(end), 4),
        )
        record["preset"] = preset
        record["started_at"] = (start_time + dt.timedelta(hours=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        record["ended_at"] = (start_time + dt.timedelta(hours=n, minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
        every = EVAL_INTERVAL[run]
        record["eval_points"] = [
            [it, round(loss(it), 4), round(loss(it) + 0.05, 4)] for it in range(start + every, end + 1, every)
        ]
        lines.append(dumps_line(record))
        entry = make_entry(session_id, end, round(loss(end), 4), parent_id=previous_id)
        entries.append(entry)
        previous_id, iteration = entry["id"], end
    atomic_write_text(run_dir / "sessions.jsonl", "\n".join(lines) + "\n")
    kept = entries[-50:]  # a pruned index, as `meta-update prune` leaves it
    best = min(kept, key=lambda e: e["metrics"]["val_loss"])
    atomic_write_json(
        run_dir / "cache" / "metadata.json",
        {
            "schema_version": 2,
            "run": run,
            "quality": {"metric": "val_loss", "mode": "min"},
            "best_id": best["id"],
            "latest_id": kept[-1]["id"],
            "checkpoints": kept,
        },
    )


def build_repo(root: Path, sessions: int) -> None:
    for run, share in RUN_SHARES.items():
        build_run(root, run, max(1, round(sessions * share)))
    (root / "README.md").write_text(README, encoding="utf-8")


def time_cli(root: Path, repeat: int) -> list[float]:
    script = Path(sys.executable).parent / "summarize"
    # without the console script next to this interpreter, run the same entry point as a module
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nanecho_tools.summarize"]
    step_summary = root / "step_summary.md"
    args = [
        *command,
        "--root",
        str(root),
        "--readme",
        "README.md",
        "--step-summary",
        "--html",
        str(root / "dashboard.html"),
    ]
    times = []
    for _ in range(repeat):
        step_summary.write_text("", encoding="utf-8")
        started = time.perf_counter()
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            env={**os.environ, "GITHUB_STEP_SUMMARY": str(step_summary)},
        )
        times.append(time.perf_counter() - started)
    return times


def output_sizes(root: Path) -> dict[str, int]:
    files = [
        root / ".training-progress" / "PROGRESS.md",
        root / "README.md",
        root / "dashboard.html",
        root / "step_summary.md",
    ]
    files += sorted((root / ".training-progress").glob("*/training_summary.json"))
    return {str(p.relative_to(root)): p.stat().st_size for p in files}


def phases(root: Path) -> str:
    """Where the time goes, in-process: reading + validating, deriving, Markdown, HTML."""
    from nanecho_core import store, summary
    from nanecho_core.summary_html import dashboard_html

    runs = summary.discover_runs(root)
    t0 = time.perf_counter()
    records = {p.name: store.read_sessions(p) for p in runs}
    t1 = time.perf_counter()
    summary.read_sessions = lambda p: records[p.name]  # type: ignore[assignment]  # derive alone
    views = [summary.build_run(p) for p in runs]
    t2 = time.perf_counter()
    summary.render_outputs(views, views)
    t3 = time.perf_counter()
    dashboard_html(views)
    t4 = time.perf_counter()
    return (
        f"  in-process phases: read+validate sessions {t1 - t0:.3f} s, derive {t2 - t1:.3f} s, "
        f"JSON+PROGRESS.md {t3 - t2:.3f} s, HTML {t4 - t3:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        small = root / "small"
        build_repo(small, 300)
        time_cli(small, 1)
        small_sizes = output_sizes(small)
        big = root / "big"
        build_repo(big, args.sessions)
        times = time_cli(big, args.repeat)
        sizes = output_sizes(big)
        breakdown = phases(big)
    best, median = min(times), statistics.median(times)
    print(
        f"summarize, {args.sessions} sessions across {len(RUN_SHARES)} runs (all outputs, fresh process each):"
    )
    print(
        f"  best {best:.3f} s, median {median:.3f} s over {args.repeat}; budget {BUDGET_S:.1f} s "
        f"-> {median / BUDGET_S:.2f} x budget ({'OK' if median < BUDGET_S else 'OVER'})"
    )
    print(breakdown)
    print("  output sizes (bytes) at 300 sessions -> at", args.sessions, "sessions:")
    for name, size in sizes.items():
        print(
            f"    {name}: {small_sizes.get(name, 0)} -> {size} ({size / max(1, small_sizes.get(name, 1)):.2f} x)"
        )


if __name__ == "__main__":
    main()

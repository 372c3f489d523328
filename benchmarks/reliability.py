"""Reliability figures: kill -9 fuzzing, hostile-input fuzzing, the reliability test suite, the push race.

    .venv/bin/python benchmarks/reliability.py --runs 200 [--jobs 2] [--cases 1000] [--only kill,fuzz,suite,race]

- kill: `--runs` sessions (ckpt-select → train-step → meta-update record → progress-commit --push against a
  bare remote), each with train-step, meta-update or progress-commit SIGKILLed (process group) at a random
  instant, uniform in its measured runtime or a few ms after it starts writing; the invariants are checked
  after every run with the real CLIs (tests/reliability/killfuzz.py). `--jobs` campaigns run side by side,
  each in its own workspace. `--fake-sessions`: sessions written by tests/factories.py instead of
  train-step, and only meta-update/progress-commit killed (torch-free, for slow machines).
- fuzz: `--cases` hostile documents per tool through the real Typer apps (tests/reliability/fuzzing.py).
- suite: tests/reliability (slow tests included) under pytest; passed/failed per file.
- race: 8 committers x 5 sessions pushing to one remote (benchmarks/race.py).

Exit status 1 when any figure shows a failure (an invalid state, a lost session, a fuzz failure).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reliability.harness import make_workspace, scratch_dir  # noqa: E402
from tests.reliability.killfuzz import TARGETS, KillCampaign, inprocess_runner  # noqa: E402


def _campaign(job: int, runs: int, seed: int, fake: bool) -> dict[str, Any]:
    base = scratch_dir(f"nanecho-killfuzz-{job}-")
    try:
        config = {"schema_version": 1} if fake else None
        ws = make_workspace(base / "ws", config=config)
        targets = ("meta-update", "progress-commit") if fake else TARGETS
        campaign = KillCampaign(ws, seed=seed + job, fake=fake, targets=targets, helper=inprocess_runner())
        outcomes = campaign.run(runs, inprocess_runner(), until_killed=True)
        return {
            "outcomes": [asdict(o) for o in outcomes],
            "recorded": len(campaign.recorded),
            "pushed": len(campaign.pushed),
            "saves": len(campaign.completed_saves),
            "reached_remote": campaign.reached_remote,
            "recorded_total": campaign.recorded_total,
            "recovery_problems": campaign.recovery_problems,
            "baseline_s": campaign.baseline_s,
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


def kill_figures(runs: int, jobs: int, seed: int, fake: bool) -> tuple[list[tuple[str, str]], bool]:
    start = time.monotonic()
    shares = [runs // jobs + (1 if j < runs % jobs else 0) for j in range(jobs)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_campaign, range(jobs), shares, [seed] * jobs, [fake] * jobs))
    outcomes = [o for r in results for o in r["outcomes"]]
    lost = sorted({s for o in outcomes for s in o["lost_sessions"]})
    invalid = [o for o in outcomes if not o["valid"]]
    killed = sum(o["killed"] for o in outcomes)
    rows = [
        (
            "kill -9 runs: kills landed / runs",
            f"{killed} / {len(outcomes)} (the rest finished before the instant)",
        )
    ]
    for target in TARGETS:
        mine = [o for o in outcomes if o["target"] == target]
        if mine:
            phase = sum(o["killed"] and o["phase_seen"] for o in mine)
            rows.append(
                (
                    f"  {target}: killed / runs",
                    f"{sum(o['killed'] for o in mine)} / {len(mine)} ({phase} mid-write)",
                )
            )
    rows += [
        ("states valid after the kill", f"{len(outcomes) - len(invalid)} / {len(outcomes)}"),
        ("  repaired by mark-missing", str(sum(o["recovered_by_mark_missing"] for o in outcomes))),
        ("sessions lost (must be 0)", str(len(lost))),
        (
            "sessions recorded / pushed (all kept)",
            f"{sum(r['recorded'] for r in results)} / {sum(r['pushed'] for r in results)}",
        ),
        ("completed checkpoint saves (all verifiable)", str(sum(r["saves"] for r in results))),
        (
            "recorded sessions at the remote after one clean session",
            f"{sum(r['reached_remote'] for r in results)} / {sum(r['recorded_total'] for r in results)}",
        ),
        ("mode", "fake sessions (no torch)" if fake else "real train-step sessions"),
        ("kill campaign wall time", f"{time.monotonic() - start:.0f} s ({jobs} job(s))"),
    ]
    for o in invalid[:10]:
        print(f"INVALID run {o['index']} ({o['target']}/{o['mode']}): {o['problems']}", file=sys.stderr)
    stuck = [p for r in results for p in r["recovery_problems"]]
    for problem in stuck[:10]:
        print(f"RECOVERY: {problem}", file=sys.stderr)
    return rows, not invalid and not lost and not stuck


def _checker(tool: str, repo: Any, counts: dict[str, int]) -> Any:
    from tests.reliability import fuzzing

    def check(case: Any) -> None:
        if tool == "meta-update":
            fuzzing.check_meta_update(case)
            ran = True
        elif tool == "progress-commit":
            ran = fuzzing.check_progress_commit(repo, *case)
        elif tool == "train-step":
            ran = fuzzing.check_train_step(*case)
        else:
            fuzzing.TOOL_CHECKS[tool](*case)
            ran = True
        counts["run" if ran else "skipped"] += 1

    return check


def fuzz_figures(cases: int) -> tuple[list[tuple[str, str]], bool]:
    from hypothesis import HealthCheck, given, settings

    from tests.reliability import fuzzing

    strategies = {
        "ckpt-select": fuzzing.CKPT_SELECT_CASES,
        "train-step": fuzzing.TRAIN_STEP_CASES,
        "meta-update": fuzzing.META_UPDATE_CASES,
        "progress-commit": fuzzing.PROGRESS_COMMIT_CASES,
        "summarize": fuzzing.SUMMARIZE_CASES,
    }
    rows: list[tuple[str, str]] = []
    ok = True
    repo = fuzzing.CommitRepo()
    try:
        for tool, strategy in strategies.items():
            counts = {"run": 0, "skipped": 0}
            check = _checker(tool, repo, counts)
            # train-step and progress-commit skip the few valid documents (they would train or commit):
            # draw 5% more so that at least `cases` are run.
            wrapped = settings(
                max_examples=cases
                if tool in ("ckpt-select", "meta-update", "summarize")
                else cases * 21 // 20,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(given(strategy)(check))
            start = time.monotonic()
            failure = ""
            try:
                wrapped()
            except Exception as exc:  # a falsified property: report it, keep measuring the others
                failure = f"FAILED: {str(exc).splitlines()[0][:120]}"
                print(f"{tool}:", "".join(traceback.format_exception(exc)), file=sys.stderr)
                ok = False
            seconds = time.monotonic() - start
            detail = f"{counts['run']} cases, {seconds:.0f} s"
            if counts["skipped"]:
                detail += f" (+{counts['skipped']} valid documents not run)"
            rows.append((f"hostile documents: {tool}", failure or f"{detail}, 0 failures"))
    finally:
        repo.close()
    return rows, ok


SUITE_SKIP = "not thousand and not killed_at_random_instants"


def suite_figures() -> tuple[list[tuple[str, str]], bool]:
    rows: list[tuple[str, str]] = []
    ok = True
    for path in sorted((REPO / "tests" / "reliability").glob("test_*.py")):
        start = time.monotonic()
        done = subprocess.run(
            # Slow tests included; the 1,000-case fuzz and the random-kill campaign are the sections above.
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                "",
                "-k",
                SUITE_SKIP,
                str(path),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
        counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail))
        ok = ok and done.returncode == 0
        rows.append((f"suite: {path.stem}", f"{counts} in {time.monotonic() - start:.0f} s"))
    return rows, ok


def race_figures() -> tuple[list[tuple[str, str]], bool]:
    from benchmarks.race import run_race

    base = scratch_dir("nanecho-race-")
    try:
        summary = run_race(
            base, writers=8, sessions=5, retries=40, backoff=0.05, recorder="meta-update"
        ).summary()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    landed = f"{summary['landed']} / {summary['attempted']}"
    rows = [
        ("push race: 8 committers x 5 sessions landed", landed),
        ("  retries mean / max", f"{summary['mean_retries']} / {summary['max_retries']}"),
    ]
    return rows, summary["landed"] == summary["attempted"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="kill -9 runs whose kill landed (default 200)")
    parser.add_argument("--jobs", type=int, default=2, help="kill campaigns side by side (default 2)")
    parser.add_argument("--cases", type=int, default=1000, help="hostile documents per tool (default 1000)")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--fake-sessions", action="store_true", help="torch-free kill campaign (see above)")
    parser.add_argument("--only", default="kill,fuzz,suite,race", help="comma-separated sections")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    for name in list(os.environ):  # in-process tool runs must not write to a real runner's files
        if name.startswith(("GITHUB_", "NANECHO_", "RUNNER_")) or name in ("GH_TOKEN", "CI"):
            del os.environ[name]
    sections = set(args.only.split(","))
    rows: list[tuple[str, str]] = []
    ok = True
    for name, produce in (
        ("kill", lambda: kill_figures(args.runs, max(1, args.jobs), args.seed, args.fake_sessions)),
        ("fuzz", lambda: fuzz_figures(args.cases)),
        ("suite", suite_figures),
        ("race", race_figures),
    ):
        if name in sections:
            section_rows, section_ok = produce()
            rows += section_rows
            ok = ok and section_ok
            print(f"[{name}] done", file=sys.stderr, flush=True)
    width = max(len(k) for k, _ in rows)
    print(f"{'figure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for key, value in rows:
        print(f"{key.ljust(width)} | {value}")
    print(f"\nverdict: {'PASS' if ok else 'FAIL'}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"ok": ok, "figures": dict(rows)}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Concurrent committers: W writers × S sessions pushing to one bare remote; nothing may be lost.

    .venv/bin/python benchmarks/race.py [--writers 8] [--sessions 5] [--retries 30] [--backoff 0.05]

Every writer is its own clone, driven by a thread that runs real processes (the console scripts):
for each session it writes a step.json (plus the fake checkpoint files it names), runs
`meta-update record step.json` and then `progress-commit --message-from step.json --push`.
Afterwards it counts the sessions that landed in the remote's sessions.jsonl against those
attempted, and prints landed/attempted, mean and max retries (attempts - 1) and the wall time.
The older system lost every other run's commit to push races: the figure to watch is 40/40.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.factories import write_fake_checkpoint  # noqa: E402
from tests.gitfixtures import (  # noqa: E402
    BIN,
    RUN,
    clone,
    isolated_git_env,
    make_remote,
    record_direct,
    remote_file,
    step_doc,
)


@dataclass
class SessionOutcome:
    writer: int
    number: int
    session_id: str
    record_rc: int
    commit_rc: int
    attempts: int
    seconds: float
    stderr: str = ""


@dataclass
class RaceReport:
    remote: Path
    clones: list[Path]
    outcomes: list[SessionOutcome] = field(default_factory=list)
    landed: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    recorder: str = "meta-update"

    @property
    def attempted(self) -> list[str]:
        return [o.session_id for o in self.outcomes]

    @property
    def retries(self) -> list[int]:
        return [max(0, o.attempts - 1) for o in self.outcomes]

    def summary(self) -> dict[str, Any]:
        return {
            "landed": len(set(self.landed) & set(self.attempted)),
            "attempted": len(self.attempted),
            "exit_0": sum(1 for o in self.outcomes if o.commit_rc == 0),
            "mean_retries": round(statistics.fmean(self.retries), 2) if self.retries else 0.0,
            "max_retries": max(self.retries, default=0),
            "wall_s": round(self.wall_s, 2),
            "recorder": self.recorder,
        }


def _run(args: list[str], environ: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def _writer(
    report: RaceReport,
    lock: threading.Lock,
    work: Path,
    writer: int,
    sessions: int,
    environ: dict[str, str],
    commit_args: list[str],
) -> None:
    scratch = work.parent / f"scratch-{writer}"
    scratch.mkdir()
    for number in range(1, sessions + 1):
        start = time.monotonic()
        step = step_doc(writer, number, start=(number - 1) * 100, end=number * 100)
        for entry in step["checkpoints"]:
            write_fake_checkpoint(work / RUN, entry)
        step_path = scratch / f"step-{number}.json"
        step_path.write_text(json.dumps(step))
        if report.recorder == "meta-update":
            recorded = _run(
                [str(BIN / "meta-update"), "record", str(step_path), "--root", str(work), "--run", RUN],
                environ,
                work,
            )
            record_rc, stderr = recorded.returncode, recorded.stderr
        else:
            record_direct(work, step)
            record_rc, stderr = 0, ""
        out = scratch / f"commit-{number}.json"
        committed = _run(
            [
                str(BIN / "progress-commit"),
                "--root",
                str(work),
                "--run",
                RUN,
                "--message-from",
                str(step_path),
            ]
            + ["--push", "--out", str(out), *commit_args],
            environ,
            work,
        )
        attempts = json.loads(out.read_text())["attempts"] if out.exists() else 0
        outcome = SessionOutcome(
            writer,
            number,
            step["session_id"],
            record_rc,
            committed.returncode,
            attempts,
            time.monotonic() - start,
            (stderr + committed.stderr).strip(),
        )
        with lock:
            report.outcomes.append(outcome)


def run_race(
    base: Path,
    *,
    writers: int = 8,
    sessions: int = 5,
    retries: int = 30,
    backoff: float = 0.05,
    recorder: str | None = None,
) -> RaceReport:
    """Run the race in `base` (an empty directory) and return what happened."""
    environ = isolated_git_env(base)
    for name in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "HOME"):
        os.environ[name] = environ[name]  # the in-process git helpers below use the same isolation
    remote = make_remote(base)
    clones = [clone(remote, base / f"writer-{w}") for w in range(writers)]
    chosen = recorder or ("meta-update" if (BIN / "meta-update").exists() else "direct")
    report = RaceReport(remote=remote, clones=clones, recorder=chosen)
    lock = threading.Lock()
    commit_args = ["--retries", str(retries), "--backoff", str(backoff)]
    threads = [
        threading.Thread(target=_writer, args=(report, lock, clones[w], w, sessions, environ, commit_args))
        for w in range(writers)
    ]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.wall_s = time.monotonic() - start
    text = remote_file(remote, f"{RUN}/sessions.jsonl")
    report.landed = [json.loads(line)["session_id"] for line in text.splitlines() if line.strip()]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--retries", type=int, default=30)
    parser.add_argument("--backoff", type=float, default=0.05)
    parser.add_argument("--recorder", choices=("meta-update", "direct"), default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nanecho-race-") as tmp:
        report = run_race(
            Path(tmp),
            writers=args.writers,
            sessions=args.sessions,
            retries=args.retries,
            backoff=args.backoff,
            recorder=args.recorder,
        )
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"race: {summary['landed']}/{summary['attempted']} sessions landed "
            f"({args.writers} writers x {args.sessions} sessions, recorder {summary['recorder']}); "
            f"exit 0: {summary['exit_0']}; retries mean {summary['mean_retries']} max {summary['max_retries']}; "
            f"wall {summary['wall_s']} s"
        )
    failed = [o for o in report.outcomes if o.commit_rc != 0]
    for outcome in failed:
        print(
            f"  writer {outcome.writer} session {outcome.number}: exit {outcome.commit_rc}: {outcome.stderr}"
        )
    sys.exit(0 if summary["landed"] == summary["attempted"] and not failed else 1)


if __name__ == "__main__":
    main()

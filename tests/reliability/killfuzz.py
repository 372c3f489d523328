"""Kill -9 fuzzing: real sessions (ckpt-select → train-step → meta-update record → progress-commit --push)
where one tool is SIGKILLed (with its whole process group: git children included) at a random instant,
followed by the invariants checked with the real CLIs.

Two ways of picking the instant, half the runs each:
- `uniform`: uniformly in the tool's runtime window, measured on an unkilled baseline session;
- `phase`: a poller watches the files the tool writes (a new name under cache/checkpoints, the metadata
  temp file or sessions.jsonl growing, .git/index.lock or new git objects) and kills a random few
  milliseconds after the first change, so checkpoint writes, metadata writes and git commit/push are hit
  often instead of rarely.

Invariants after every run: `meta-update validate` passes (or `mark-missing` repairs what it reports);
`ckpt-select` without --allow-fresh chooses a checkpoint at least as good as the best one whose save
completed (sidecar + sha256 verified by this module, independently of the tools); `git fsck --full` passes
in the clone and the remote; every recorded session is still in sessions.jsonl and every pushed session is
still at the remote's tip. The next run's unkilled steps must also succeed (a crash must not block the
pipeline, e.g. by a stale lock).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.reliability.harness import (
    Workspace,
    best_val_loss,
    fsck,
    isolated_logging,
    lineage_root,
    one_error_line,
    remote_sessions,
    session_ids_in,
    verified_checkpoints,
)

TARGETS = ("train-step", "meta-update", "progress-commit")
POLL_S = 0.0005
# Tools an unkilled step may run in-process (progress-commit stays a subprocess: it runs git with the
# workspace's isolated environment).
IN_PROCESS_HELPERS = ("ckpt-select", "meta-update")
# How long after the first observed write the kill may land (the phase's typical length).
PHASE_SPREAD_S = {"train-step": 0.03, "meta-update": 0.02, "progress-commit": 0.05}


@dataclass
class RunOutcome:
    index: int
    target: str
    mode: str
    seconds: float
    killed: bool
    phase_seen: bool
    valid: bool
    recovered_by_mark_missing: bool = False
    problems: list[str] = field(default_factory=list)
    lost_sessions: list[str] = field(default_factory=list)


@dataclass
class Step:
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    killed: bool = False
    phase_seen: bool = False


def _listing(path: Path) -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir(path)))
    except OSError:
        return ()


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def phase_marker(ws: Workspace, target: str) -> Callable[[], object]:
    """A cheap snapshot of what `target` writes; it changes when the tool starts writing."""
    if target == "train-step":
        ckpts = ws.run_dir / "cache" / "checkpoints"
        return lambda: _listing(ckpts)
    if target == "meta-update":
        cache = ws.run_dir / "cache"
        return lambda: (_listing(cache), _size(ws.sessions), _mtime(ws.metadata))
    git_dir = ws.root / ".git"
    # Porcelain (index, locks) and plumbing (new objects, packs, refs, reflogs) writes, local and remote.
    watched = [
        git_dir / "index",
        git_dir / "objects",
        git_dir / "objects" / "pack",
        git_dir / "refs" / "heads",
        git_dir / "logs" / "HEAD",
        git_dir / "HEAD",
        ws.remote / "objects",
        ws.remote / "objects" / "pack",
        ws.remote / "refs" / "heads",
    ]
    return lambda: (os.path.exists(git_dir / "index.lock"), *(_mtime(p) for p in watched), _listing(git_dir))


def run_step(
    ws: Workspace,
    args: list[str],
    *,
    kill_after: float | None = None,
    marker: Callable[[], object] | None = None,
    spread: float = 0.0,
    rng: random.Random | None = None,
    timeout: float = 300,
) -> Step:
    """Run one tool; SIGKILL its process group `kill_after` seconds after start, or (with `marker`)
    a random 0..`spread` seconds after the marker first changes. Returns what happened."""
    start = time.monotonic()
    initial = marker() if marker else None
    proc = ws.popen(args)
    killed = phase_seen = False
    try:
        if kill_after is not None or marker is not None:
            while proc.poll() is None:
                now = time.monotonic() - start
                if marker is not None and not phase_seen and marker() != initial:
                    phase_seen = True
                    kill_after = now + (rng or random).uniform(0.0, spread)
                if kill_after is not None and now >= kill_after:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                        killed = True
                    except ProcessLookupError:
                        pass
                    break
                if now > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise TimeoutError(f"{args[0]} ran past {timeout}s")
                time.sleep(POLL_S)
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # A kill that landed after the process had already exited is not a kill.
    killed = killed and proc.returncode == -signal.SIGKILL
    return Step(proc.returncode, stdout, stderr, time.monotonic() - start, killed, phase_seen)


class KillCampaign:
    """A sequence of sessions in one workspace, each with one tool SIGKILLed at a random instant."""

    def __init__(
        self,
        ws: Workspace,
        *,
        seed: int,
        iters: int = 10,
        targets: tuple[str, ...] = TARGETS,
        fake: bool = False,
        modes: tuple[str, ...] = ("uniform", "phase"),
        helper: Callable[[list[str]], tuple[int, str, str]] | None = None,
    ) -> None:
        """`fake`: sessions are written by tests/factories.py (fake weights, no torch) instead of
        train-step, so meta-update and progress-commit can be killed many times in a fast test.
        `modes`: cycled per round of targets. `helper`: runs unkilled light steps in-process."""
        self.ws = ws
        self.targets = targets
        self.modes = modes
        self.helper = helper
        self.fake = fake
        self.rng = random.Random(seed)
        self.iters = iters
        self.baseline_s: dict[str, float] = {}
        self.recorded: set[str] = set()  # sessions whose `meta-update record` exited 0
        self.pushed: set[str] = set()  # sessions whose progress-commit reported a landed push
        self.completed_saves: dict[str, dict[str, Any]] = {}  # checkpoint id → entry (train-step exit 0)
        self.outcomes: list[RunOutcome] = []
        self.recovery_problems: list[str] = []
        self.reached_remote = 0
        self.recorded_total = 0  # sessions in sessions.jsonl or whose record exited 0
        self._counter = 0

    def _paths(self) -> tuple[Path, Path, Path]:
        self._counter += 1
        n = self._counter
        return self.ws.out / f"sel-{n}.json", self.ws.out / f"step-{n}.json", self.ws.out / f"commit-{n}.json"

    def _unkilled(self, args: list[str], measure: bool) -> Step:
        """A step nobody kills: in-process for the light tools when a helper runner is set (the same
        apps, without interpreter start-up), else a subprocess (always when measuring the baseline)."""
        if self.helper is None or measure or args[0] not in IN_PROCESS_HELPERS:
            return run_step(self.ws, args)
        start = time.monotonic()
        code, out, err = self.helper(args)
        return Step(code, out, err, time.monotonic() - start)

    def session(
        self, target: str | None = None, mode: str = "uniform", *, measure: bool = False
    ) -> tuple[list[str], Step | None]:
        """One session; `target` (if any) is killed; `measure` records each tool's runtime (baseline).
        Returns (problems in unkilled steps, the target's step)."""
        ws = self.ws
        sel, step_json, commit_json = self._paths()
        problems: list[str] = []
        select = self._unkilled(ws.select_args(sel), measure)
        if select.returncode != 0:
            return [f"ckpt-select exit {select.returncode}: {select.stderr.strip()[-300:]}"], None
        resume = sel if json.loads(sel.read_text())["source"] != "fresh" else None
        plan = [
            ("train-step", ws.train_args(step_json, resume=resume, iters=self.iters)),
            ("meta-update", ws.meta_args("record", str(step_json))),
            ("progress-commit", ws.commit_args(commit_json, step=step_json)),
        ]
        if self.fake:
            plan = plan[1:]
            fake_session(ws, json.loads(sel.read_text()), step_json, self.iters, self.rng)
            self._learn("train-step", step_json, commit_json)
        for name, args in plan:
            kwargs: dict[str, Any] = {}
            if name == target:
                if mode == "uniform":
                    kwargs["kill_after"] = self.rng.uniform(0.0, self.baseline_s.get(name, 2.0))
                else:
                    kwargs["marker"] = phase_marker(ws, name)
                    kwargs["spread"] = PHASE_SPREAD_S[name]
                    kwargs["rng"] = self.rng
            step = run_step(ws, args, **kwargs) if name == target else self._unkilled(args, measure)
            if measure:
                self.baseline_s[name] = step.seconds
            if step.killed:
                return problems, step
            if step.returncode != 0:
                problems.append(f"{name} exit {step.returncode}: {step.stderr.strip()[-300:]}")
                return problems, step if name == target else None
            self._learn(name, step_json, commit_json)
        return problems, None

    def _learn(self, name: str, step_json: Path, commit_json: Path) -> None:
        step = json.loads(step_json.read_text())
        if name == "train-step":
            for entry in step.get("checkpoints", []):
                self.completed_saves[entry["id"]] = entry
        elif name == "meta-update":
            self.recorded.add(step["session_id"])
        elif name == "progress-commit":
            result = json.loads(commit_json.read_text())
            if result.get("pushed"):
                self.pushed.add(step["session_id"])

    def check(
        self, app_runner: Callable[[list[str]], tuple[int, str, str]]
    ) -> tuple[list[str], bool, list[str]]:
        """Invariants → (problems, recovered by mark-missing, lost sessions)."""
        ws = self.ws
        problems: list[str] = []
        recovered = False
        code, _out, err = app_runner(ws.meta_args("validate"))
        if code == 2:
            fix, _, fix_err = app_runner(ws.meta_args("mark-missing"))
            code, _out, err = app_runner(ws.meta_args("validate"))
            recovered = code == 0
            if fix != 0:
                problems.append(f"mark-missing exit {fix}: {fix_err.strip()[-200:]}")
        if code != 0:
            problems.append(f"validate exit {code}: {err.strip()[-300:]}")
        available = verified_checkpoints(ws.run_dir)
        sel = ws.out / "check-selection.json"
        code, _out, err = app_runner(ws.select_args(sel))
        lost: set[str] = set()
        if code != 0:
            problems.append(f"ckpt-select exit {code}: {err.strip()[-300:]}")
        else:
            doc = json.loads(sel.read_text())
            chosen = doc["chosen"]
            best = best_val_loss(available)
            if available and chosen is None:
                problems.append(
                    f"ckpt-select chose nothing although {len(available)} verified checkpoints exist"
                )
            elif chosen is not None:
                if chosen["id"] not in available:
                    problems.append(f"ckpt-select chose {chosen['id']}, which is not verifiable")
                # The best picks the lineage; the session may continue from a later checkpoint of it.
                root = lineage_root(doc, available) or chosen
                if root["iteration"] > chosen["iteration"]:
                    problems.append(f"ckpt-select resumed {chosen['id']}, behind the best {root['id']}")
                loss = root["metrics"]["val_loss"]
                if best is not None and (loss is None or loss > best):
                    problems.append(f"ckpt-select chose val_loss {loss}, a verified checkpoint has {best}")
                    lost |= {e["session_id"] for e in available.values() if e["metrics"]["val_loss"] == best}
        for repo in (ws.root, ws.remote):
            complaint = fsck(repo, ws.env)
            if complaint:
                problems.append(complaint)
        for cid, entry in self.completed_saves.items():
            if cid not in available and not _pruned(ws, cid):
                problems.append(f"completed save {cid} is no longer verifiable")
                lost.add(entry["session_id"])
        local = session_ids_in(ws.sessions.read_text()) if ws.sessions.exists() else set()
        for sid in sorted(self.recorded - local):
            problems.append(f"recorded session {sid} vanished from sessions.jsonl")
            lost.add(sid)
        remote = remote_sessions(ws)
        for sid in sorted(self.pushed - remote):
            problems.append(f"pushed session {sid} is not at the remote's tip")
            lost.add(sid)
        return problems, recovered, sorted(lost)

    def run(
        self,
        runs: int,
        app_runner: Callable[[list[str]], tuple[int, str, str]],
        *,
        until_killed: bool = False,
    ) -> list[RunOutcome]:
        """The baseline session, then `runs` runs (with `until_killed`: runs until `runs` kills landed;
        a tool may finish before its instant), checking the invariants after each."""
        baseline_problems, _ = self.session(None, measure="uniform" in self.modes)
        if baseline_problems:
            raise RuntimeError(f"baseline session failed: {baseline_problems}")
        index = -1
        while True:
            index += 1
            landed = sum(o.killed for o in self.outcomes)
            if (landed if until_killed else index) >= runs or index >= 3 * runs:
                break
            target = self.targets[index % len(self.targets)]
            mode = self.modes[(index // len(self.targets)) % len(self.modes)]
            before = time.monotonic()
            step_problems, killed_step = self.session(target, mode)
            if killed_step is not None and not killed_step.killed and killed_step.returncode not in (0, None):
                problem = one_error_line(killed_step.stderr)
                if problem:
                    step_problems.append(f"{target}: {problem}")
            problems, recovered, lost = self.check(app_runner)
            outcome = RunOutcome(
                index=index,
                target=target,
                mode=mode,
                seconds=round(time.monotonic() - before, 3),
                killed=bool(killed_step and killed_step.killed),
                phase_seen=bool(killed_step and killed_step.phase_seen),
                valid=not (problems or step_problems),
                recovered_by_mark_missing=recovered,
                problems=step_problems + problems,
                lost_sessions=lost,
            )
            self.outcomes.append(outcome)
        self.recover()
        return self.outcomes

    def recover(self) -> None:
        """One clean session after the campaign, as the next CI job would run: it must succeed, and
        then every session ever recorded must be at the remote's tip (a kill left nothing stuck)."""
        problems, _ = self.session(None)
        local = session_ids_in(self.ws.sessions.read_text()) if self.ws.sessions.exists() else set()
        remote = remote_sessions(self.ws)
        self.recovery_problems = problems + [
            f"recorded session {s} never reached the remote" for s in sorted((self.recorded | local) - remote)
        ]
        self.recorded_total = len(self.recorded | local)
        self.reached_remote = len((self.recorded | local) & remote)


def fake_session(ws: Workspace, selection: dict[str, Any], out: Path, iters: int, rng: random.Random) -> None:
    """What a train-step session leaves behind (checkpoint + sidecar, step.json), with fake weights."""
    from tests.factories import make_entry, make_session, write_fake_checkpoint

    chosen = selection["chosen"]
    start = chosen["iteration"] if chosen else 0
    start_loss = chosen["metrics"]["val_loss"] if chosen else 5.5
    session_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{rng.randrange(16**6):06x}"
    loss = round(start_loss * rng.uniform(0.95, 0.99), 6)
    payload = os.urandom(256)
    entry = make_entry(
        session_id, start + iters, loss, parent_id=chosen["id"] if chosen else None, payload=payload
    )
    entry["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_fake_checkpoint(ws.run_dir, entry, payload)
    source = "cache" if chosen else "fresh"
    record = make_session(
        session_id,
        start,
        start + iters,
        run=ws.run_dir.name,
        resumed_from=chosen["id"] if chosen else None,
        resume_source=source,
        start_val_loss=start_loss,
        end_val_loss=loss,
        checkpoints=[entry],
    )
    out.write_text(json.dumps(record), encoding="utf-8")


def _pruned(ws: Workspace, cid: str) -> bool:
    """Whether the index says retention removed `cid` on purpose."""
    try:
        entries: Iterable[dict[str, Any]] = json.loads(ws.metadata.read_text())["checkpoints"]
    except (OSError, ValueError, KeyError):
        return False
    return any(e.get("id") == cid and e.get("status") == "pruned" for e in entries)


def subprocess_runner(ws: Workspace) -> Callable[[list[str]], tuple[int, str, str]]:
    """Invariant checks through the console scripts (the slow, most literal way)."""

    def runner(args: list[str]) -> tuple[int, str, str]:
        done = ws.tool(args)
        return done.returncode, done.stdout, done.stderr

    return runner


def inprocess_runner() -> Callable[[list[str]], tuple[int, str, str]]:
    """The same Typer apps in-process (no interpreter start-up per call): (exit code, stdout, stderr).
    An uncaught exception comes back as exit 1 with its traceback on stderr."""
    import importlib
    import traceback

    from typer.testing import CliRunner

    cli = CliRunner()

    def runner(args: list[str]) -> tuple[int, str, str]:
        module = importlib.import_module("nanecho_tools." + args[0].replace("-", "_"))
        with isolated_logging():
            result = cli.invoke(module.app, args[1:], catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(result.exception))
            return 1, result.stdout, result.stderr + trace
        return result.exit_code, result.stdout, result.stderr

    return runner

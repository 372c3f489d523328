"""Run a GitHub Actions workflow file on this machine: its jobs, `if:`s, `run:` scripts and actions.

The YAML itself is executed, not a copy of its logic: env at every level, `${{ }}` expressions
(replay.expressions), GITHUB_OUTPUT / GITHUB_ENV / GITHUB_PATH / GITHUB_STEP_SUMMARY files, bash
with GitHub's flags, step and job `timeout-minutes` (GitHub's SIGINT → 7.5 s → SIGTERM → 2.5 s →
SIGKILL on the step's process group), `needs`, job outputs, `continue-on-error`, and the actions in
ACTIONS. Constructs outside that subset raise ReplayError. A run is a generator of step results, so
a test can interleave two runs step by step.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from replay import actions, artifacts
from replay.actions import ReplayError
from replay.expressions import Context, substitute_value, to_string
from replay.jobs import ACTIONS, GRACE, JobRun, StepResult, needs_of

WORKFLOW_KEYS = {"name", "run-name", "on", "permissions", "concurrency", "env", "defaults", "jobs"}
JOB_KEYS = {
    "name",
    "runs-on",
    "timeout-minutes",
    "permissions",
    "outputs",
    "steps",
    "needs",
    "if",
    "env",
    "defaults",
    "concurrency",
}
STEP_KEYS = {
    "name",
    "id",
    "uses",
    "with",
    "run",
    "env",
    "if",
    "shell",
    "working-directory",
    "timeout-minutes",
    "continue-on-error",
}


@dataclass
class RunResult:
    run_id: int
    event: str
    conclusion: str
    jobs: dict[str, str]  # job id -> success | failure | cancelled | skipped
    steps: list[StepResult]
    summaries: dict[str, str]  # job id -> its GITHUB_STEP_SUMMARY Markdown
    job_outputs: dict[str, dict[str, str]]

    def step(self, job: str, step_id: str) -> StepResult:
        for result in self.steps:
            if result.job == job and result.id == step_id:
                return result
        raise KeyError(f"no step {job}/{step_id} in run {self.run_id}")

    @property
    def summary(self) -> str:
        return "".join(self.summaries.values())


def _normalize_on(doc: dict[Any, Any]) -> dict[str, Any]:
    on = doc.get("on", doc.get(True))  # PyYAML reads the bare key `on` as the boolean True
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {name: {} for name in on}
    if isinstance(on, dict):
        return {name: spec or {} for name, spec in on.items()}
    raise ReplayError("workflow has no `on:` triggers")


def load_workflow(path: Path) -> dict[str, Any]:
    """Parse and check that the workflow stays inside what the replay emulates."""
    doc = yaml.safe_load(Path(path).read_text())
    doc["on"] = _normalize_on(doc)
    doc.pop(True, None)
    extra = set(doc) - WORKFLOW_KEYS
    if extra:
        raise ReplayError(f"{path}: unsupported workflow keys {sorted(extra)}")
    for job_id, job in doc.get("jobs", {}).items():
        extra = set(job) - JOB_KEYS
        if extra:
            raise ReplayError(f"{path}: job {job_id}: unsupported keys {sorted(extra)} (matrix, services, …)")
        for index, step in enumerate(job.get("steps") or []):
            extra = set(step) - STEP_KEYS
            if extra:
                raise ReplayError(f"{path}: job {job_id} step {index + 1}: unsupported keys {sorted(extra)}")
            if ("run" in step) == ("uses" in step):
                raise ReplayError(f"{path}: job {job_id} step {index + 1}: needs exactly one of run/uses")
            if "uses" in step and step["uses"].split("@")[0] not in ACTIONS:
                raise ReplayError(
                    f"{path}: job {job_id}: action {step['uses']} is not emulated by the replay"
                )
    return doc


class Replay:
    """One emulated repository on GitHub: a bare remote, its cache, artifacts and run history."""

    def __init__(
        self,
        workflow: Path,
        remote: Path,
        state: Path,
        *,
        variables: dict[str, str] | None = None,
        default_branch: str = "main",
        grace: tuple[float, float] = GRACE,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.workflow_path = Path(workflow)
        self.workflow = load_workflow(self.workflow_path)
        self.remote = Path(remote)
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.variables = dict(variables or {})
        self.default_branch = default_branch
        self.grace = grace
        self.echo = echo
        self.token = "ghs_replayFakeToken" + uuid.uuid4().hex[:20]
        self.cache = actions.CacheStore(self.state / "cache")
        self.artifacts = artifacts.ArtifactStore(self.state / "artifacts")

    # --- run history (what dawidd6/action-download-artifact searches) ---
    def registry(self) -> list[dict[str, Any]]:
        path = self.state / "runs.json"
        return json.loads(path.read_text()) if path.exists() else []

    def _register(self, record: dict[str, Any]) -> None:
        runs = [r for r in self.registry() if r["run_id"] != record["run_id"]] + [record]
        (self.state / "runs.json").write_text(json.dumps(runs, indent=1))

    def denied_remote(self, reason: str) -> Path:
        slug = "no-credentials" if "persist-credentials" in reason else "read-only-token"
        return actions.make_denied_remote(self.state / f"denied-push-{slug}.git", reason)

    def _remote_sha(self, ref: str) -> str:
        return actions.git("rev-parse", ref, cwd=self.remote)

    def _event(self, name: str, branch: str, inputs: dict[str, Any], pr_head: str | None) -> dict[str, Any]:
        triggers = self.workflow["on"]
        if name not in triggers:
            raise ReplayError(
                f"{self.workflow_path.name} is not triggered by {name} (on: {sorted(triggers)})"
            )
        spec = triggers[name]
        branches = spec.get("branches") if isinstance(spec, dict) else None
        if branches and not any(fnmatch.fnmatchcase(branch, pattern) for pattern in branches):
            raise ReplayError(f"{name} on branch {branch} does not match branches {branches}")
        repo = {"full_name": "nanecho/replay", "default_branch": self.default_branch, "fork": False}
        gh: dict[str, Any] = {
            "event_name": name,
            "ref": f"refs/heads/{branch}",
            "ref_name": branch,
            "head_ref": "",
            "base_ref": "",
            "ref_type": "branch",
        }
        if name == "pull_request":
            if not pr_head:
                raise ReplayError("a pull_request replay needs pr_head (the head branch in the remote)")
            number = 1 + sum(1 for r in self.registry() if r["event"] == "pull_request")
            sha = self._remote_sha(f"refs/heads/{pr_head}")
            # GitHub's merge ref; the head stands in for the merge commit (test branches sit on the base tip).
            actions.git("update-ref", f"refs/pull/{number}/merge", sha, cwd=self.remote)
            gh |= {
                "ref": f"refs/pull/{number}/merge",
                "ref_name": f"{number}/merge",
                "head_ref": pr_head,
                "base_ref": branch,
            }
            payload: dict[str, Any] = {
                "number": number,
                "pull_request": {
                    "number": number,
                    "head": {"ref": pr_head, "sha": sha, "repo": repo},
                    "base": {"ref": branch},
                },
            }
        else:
            sha = self._remote_sha(f"refs/heads/{branch}")
            payload = {"ref": gh["ref"], "after": sha}
            if name == "workflow_dispatch":
                payload["inputs"] = inputs
            if name == "schedule":
                payload["schedule"] = (triggers["schedule"] or [{}])[0].get("cron", "")
        payload["repository"] = repo
        return gh | {"sha": sha, "event": payload}

    def _inputs(self, event: str, given: dict[str, Any]) -> dict[str, Any]:
        if event != "workflow_dispatch":
            if given:
                raise ReplayError(f"{event} events carry no inputs")
            return {}
        declared = (self.workflow["on"]["workflow_dispatch"] or {}).get("inputs") or {}
        unknown = set(given) - set(declared)
        if unknown:
            raise ReplayError(f"unknown workflow_dispatch inputs {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            value = given.get(name, spec.get("default", "" if spec.get("type") != "boolean" else False))
            kind = spec.get("type", "string")
            if kind == "boolean":
                value = value if isinstance(value, bool) else str(value).lower() == "true"
            elif kind == "choice" and str(value) not in [str(o) for o in spec.get("options", [])]:
                raise ReplayError(f"input {name}: {value!r} is not one of {spec.get('options')}")
            elif kind == "number":
                value = float(value)
            else:
                value = str(value)
            values[name] = value
        return values

    def start(
        self,
        event: str = "push",
        *,
        inputs: dict[str, Any] | None = None,
        branch: str | None = None,
        pr_head: str | None = None,
        timeouts: dict[str, float] | None = None,
    ) -> RunHandle:
        """Create a run (its commit is fixed now, like GitHub's event) and return it, not started."""
        run_id = max([r["run_id"] for r in self.registry()], default=1000) + 1
        values = self._inputs(event, inputs or {})
        gh = self._event(event, branch or self.default_branch, values, pr_head)
        gh |= {
            "run_id": str(run_id),
            "run_number": str(run_id - 1000),
            "run_attempt": "1",
            "actor": "replay",
            "repository": "nanecho/replay",
            "repository_owner": "nanecho",
            "token": self.token,
            "workflow": self.workflow.get("name", self.workflow_path.name),
            "server_url": "https://github.com",
            "workflow_file": self.workflow_path.name,
        }
        self._register(
            {
                "run_id": run_id,
                "event": event,
                "workflow_file": self.workflow_path.name,
                "head_branch": gh["head_ref"] or gh["ref_name"],
                "status": "in_progress",
                "conclusion": None,
            }
        )
        return RunHandle(self, run_id, gh, values, dict(timeouts or {}))

    def run(self, event: str = "push", **kwargs: Any) -> RunResult:
        return self.start(event, **kwargs).finish()


class RunHandle:
    """A workflow run in progress: iterate step() results, or advance to a step, or finish()."""

    def __init__(
        self,
        replay: Replay,
        run_id: int,
        gh: dict[str, Any],
        inputs: dict[str, Any],
        timeouts: dict[str, float],
    ) -> None:
        self.replay, self.run_id, self.github, self.inputs, self.timeouts = (
            replay,
            run_id,
            gh,
            inputs,
            timeouts,
        )
        self.results: list[StepResult] = []
        self.jobs: dict[str, str] = {}
        self.summaries: dict[str, str] = {}
        self.job_outputs: dict[str, dict[str, str]] = {}
        self._steps = self._run()
        self._done: RunResult | None = None

    def __iter__(self) -> Iterator[StepResult]:
        """The remaining steps, each yielded once it has run."""
        return self._steps

    def advance(self, job: str, step_id: str) -> StepResult:
        """Run steps up to and including job/step_id (skipped or not)."""
        for result in self._steps:
            if result.job == job and result.id == step_id:
                return result
        raise KeyError(f"run {self.run_id} finished without reaching {job}/{step_id}")

    def finish(self) -> RunResult:
        for _ in self._steps:
            pass
        assert self._done is not None
        return self._done

    def _contexts(self, **extra: Any) -> dict[str, Any]:
        return {
            "github": self.github,
            "inputs": self.inputs,
            "vars": self.replay.variables,
            "secrets": {"GITHUB_TOKEN": self.replay.token},
            **extra,
        }

    def _run(self) -> Iterator[StepResult]:
        wf = self.replay.workflow
        wf_env = {
            k: to_string(substitute_value(v, Context(self._contexts())))
            for k, v in (wf.get("env") or {}).items()
        }
        for job_id in _job_order(wf["jobs"]):
            yield from JobRun(self, job_id, wf["jobs"][job_id], wf_env).steps()
        failed = [r for r in self.jobs.values() if r == "failure"]
        conclusion = "failure" if failed else "cancelled" if "cancelled" in self.jobs.values() else "success"
        record = {
            "run_id": self.run_id,
            "event": self.github["event_name"],
            "status": "completed",
            "workflow_file": self.replay.workflow_path.name,
            "conclusion": conclusion,
            "head_branch": self.github["head_ref"] or self.github["ref_name"],
        }
        self.replay._register(record)
        self._done = RunResult(
            self.run_id,
            self.github["event_name"],
            conclusion,
            dict(self.jobs),
            self.results,
            dict(self.summaries),
            dict(self.job_outputs),
        )


def _job_order(jobs: dict[str, Any]) -> list[str]:
    order: list[str] = []
    pending = list(jobs)
    while pending:
        ready = [j for j in pending if all(n in order for n in needs_of(jobs[j]))]
        if not ready:
            raise ReplayError(f"jobs {pending} have unknown or circular needs")
        order.append(ready[0])
        pending.remove(ready[0])
    return order

"""One job of a replayed run: its environment, its steps (scripts and emulated actions), its status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replay import actions, artifacts
from replay.actions import ActionContext, ActionFailed, ReplayError
from replay.expressions import Context, evaluate_condition, substitute, substitute_value, to_string, truthy

if TYPE_CHECKING:
    from replay.harness import RunHandle

ACTIONS: dict[str, Callable[[ActionContext, dict[str, Any]], dict[str, str]]] = {
    "actions/checkout": actions.checkout,
    "actions/setup-python": actions.setup_python,
    "actions/cache/restore": actions.cache_restore,
    "actions/cache/save": actions.cache_save,
    "actions/upload-artifact": artifacts.upload_artifact,
    "actions/download-artifact": artifacts.download_artifact,
    "dawidd6/action-download-artifact": artifacts.download_previous_artifact,
}
# The inputs each emulation understands; any other input fails loudly instead of being ignored.
ACTION_INPUTS: dict[str, set[str]] = {
    "actions/checkout": {"persist-credentials", "fetch-depth"},
    "actions/setup-python": {"python-version", "cache", "cache-dependency-path"},
    "actions/cache/restore": {"path", "key", "restore-keys", "fail-on-cache-miss", "lookup-only"},
    "actions/cache/save": {"path", "key"},
    "actions/upload-artifact": {
        "name",
        "path",
        "if-no-files-found",
        "retention-days",
        "include-hidden-files",
        "overwrite",
        "compression-level",
    },
    "actions/download-artifact": {"name", "path", "run-id", "github-token"},
    "dawidd6/action-download-artifact": set(artifacts.DAWIDD6_INPUTS),
}
SHELLS: dict[str | None, list[str]] = {
    None: ["bash", "-e", "{0}"],  # GitHub's default when no shell is given
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"],
    "sh": ["sh", "-e", "{0}"],
    "python": ["python", "{0}"],
}
GRACE = (7.5, 2.5)  # GitHub runner on cancel/timeout: SIGINT, 7.5 s, SIGTERM, 2.5 s, SIGKILL
CLEANUP_TIMEOUT_S = 300.0  # always() steps after a job timeout get this long each


@dataclass
class StepResult:
    job: str
    id: str
    name: str
    outcome: str  # success | failure | cancelled | skipped
    conclusion: str
    outputs: dict[str, str] = field(default_factory=dict)
    log: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    annotations: list[str] = field(default_factory=list)


def permissions_of(value: Any) -> dict[str, str]:
    if value is None or value == "write-all":
        return {"contents": "write", "actions": "write"}
    if value == "read-all":
        return {"contents": "read", "actions": "read"}
    return {str(k): str(v) for k, v in value.items()}


def needs_of(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def parse_file_command(path: Path) -> dict[str, str]:
    """`name=value` and `name<<DELIM … DELIM` lines, as in GITHUB_OUTPUT and GITHUB_ENV."""
    values: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").split("\n") if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        i += 1
        if not line:
            continue
        heredoc = "<<" in line and ("=" not in line or line.index("<<") < line.index("="))
        if heredoc:
            name, delimiter = line.split("<<", 1)
            body: list[str] = []
            while i < len(lines) and lines[i].rstrip("\r") != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ActionFailed(f"Matching delimiter not found '{delimiter}' in {path.name}")
            i += 1
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        else:
            raise ActionFailed(f"Invalid format '{line}' in {path.name}")
    return values


def _kill_group(proc: subprocess.Popen[bytes], grace: tuple[float, float]) -> None:
    for sig, wait in ((signal.SIGINT, grace[0]), (signal.SIGTERM, grace[1]), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class JobRun:
    """Runs one job of a RunHandle, yielding a StepResult after every step."""

    def __init__(self, handle: RunHandle, job_id: str, job: dict[str, Any], wf_env: dict[str, str]) -> None:
        self.h, self.job_id, self.job, self.wf_env = handle, job_id, job, wf_env
        self.replay = handle.replay
        wf = self.replay.workflow
        self.permissions = permissions_of(job.get("permissions", wf.get("permissions")))
        self.shell_default = ((job.get("defaults") or wf.get("defaults") or {}).get("run") or {}).get("shell")
        base = self.replay.state / "runners" / f"{handle.run_id}-{job_id}"
        self.workspace, self.temp, self.tool, self.home = (
            base / p for p in ("work/repo", "temp", "tool", "home")
        )
        self.file_env: dict[str, str] = {}  # GITHUB_ENV and action-set variables
        self.paths: list[str] = []  # GITHUB_PATH, newest first
        self.steps_ctx: dict[str, dict[str, Any]] = {}
        self.status = "success"
        self.summary: list[str] = []
        self.needs = needs_of(job)
        self.job_env: dict[str, str] = {}
        self.deadline = time.monotonic()

    def _contexts(self, env: dict[str, str]) -> dict[str, Any]:
        runner = {
            "os": "Linux",
            "arch": "X64",
            "temp": str(self.temp),
            "tool_cache": str(self.tool),
            "name": "replay",
            "environment": "github-hosted",
        }
        needs = {
            n: {"result": self.h.jobs.get(n), "outputs": self.h.job_outputs.get(n, {})} for n in self.needs
        }
        contexts = self.h._contexts(
            env=env, steps=self.steps_ctx, job={"status": self.status}, runner=runner, needs=needs
        )
        contexts["github"] = {**contexts["github"], "job": self.job_id}
        return contexts

    def steps(self) -> Iterator[StepResult]:
        results = [self.h.jobs.get(n) for n in self.needs]
        gate = (
            "failure"
            if "failure" in results
            else "cancelled"
            if "cancelled" in results
            else ("success" if all(r == "success" for r in results) else "skipped")
        )
        if not evaluate_condition(self.job.get("if"), Context(self._contexts({}), gate)):
            self.h.jobs[self.job_id] = "skipped"
            return
        for path in (self.workspace, self.temp, self.tool, self.home):
            path.mkdir(parents=True, exist_ok=True)
        ctx = Context(self._contexts(dict(self.wf_env)))
        self.job_env = {
            k: to_string(substitute_value(v, ctx)) for k, v in (self.job.get("env") or {}).items()
        }
        limit = self.h.timeouts.get(self.job_id, float(self.job.get("timeout-minutes", 360)) * 60)
        self.deadline = time.monotonic() + limit
        for index, step in enumerate(self.job.get("steps") or []):
            result = self._step(index, step)
            self.h.results.append(result)
            yield result
        outputs_ctx = Context(self._contexts({**self.file_env, **self.wf_env, **self.job_env}), self.status)
        outputs = {
            k: to_string(substitute_value(v, outputs_ctx)) for k, v in (self.job.get("outputs") or {}).items()
        }
        self.h.job_outputs[self.job_id] = outputs
        self.h.summaries[self.job_id] = "".join(self.summary)
        self.h.jobs[self.job_id] = self.status

    def _step(self, index: int, step: dict[str, Any]) -> StepResult:
        sid = str(step.get("id") or f"step{index + 1}")
        name = str(step.get("name") or step.get("uses") or str(step["run"]).strip().splitlines()[0])
        env = {**self.file_env, **self.wf_env, **self.job_env}
        ctx = Context(self._contexts(env), self.status)
        if not evaluate_condition(step.get("if"), ctx):
            self.steps_ctx[sid] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
            return StepResult(self.job_id, sid, name, "skipped", "skipped")
        step_env = {k: to_string(substitute_value(v, ctx)) for k, v in (step.get("env") or {}).items()}
        env |= step_env
        ctx.contexts["env"] = env  # type: ignore[index]
        started = time.monotonic()
        log: list[str] = []
        if "run" in step:
            outcome, outputs, timed_out = self._script(sid, step, ctx, env, log)
        else:
            (outcome, outputs), timed_out = self._action(step, ctx, env, log), False
        if outcome == "cancelled":
            self.status = "cancelled"
        coe = truthy(substitute_value(step.get("continue-on-error", False), ctx))
        conclusion = "success" if outcome == "failure" and coe else outcome
        if conclusion == "failure" and self.status == "success":
            self.status = "failure"
        self.steps_ctx[sid] = {"outputs": outputs, "outcome": outcome, "conclusion": conclusion}
        text = "".join(log)
        notes = [line for line in text.splitlines() if line.startswith(("::error", "::warning", "::notice"))]
        return StepResult(
            self.job_id,
            sid,
            name,
            outcome,
            conclusion,
            outputs,
            text,
            time.monotonic() - started,
            timed_out,
            notes,
        )

    def _action(
        self, step: dict[str, Any], ctx: Context, env: dict[str, str], log: list[str]
    ) -> tuple[str, dict[str, str]]:
        uses = str(step["uses"])
        inputs = {k: to_string(substitute_value(v, ctx)) for k, v in (step.get("with") or {}).items()}
        gh = {**self.h.github, "job": self.job_id}
        action_ctx = ActionContext(
            self.workspace,
            self.temp,
            self.tool,
            gh,
            self.permissions,
            self.replay,
            lambda line: self._emit(log, line + "\n"),
            env,
        )
        unknown = set(inputs) - ACTION_INPUTS[uses.split("@")[0]]
        if unknown:
            raise ReplayError(f"{uses}: inputs {sorted(unknown)} are not emulated by the replay")
        try:
            outputs = ACTIONS[uses.split("@")[0]](action_ctx, inputs)
        except ActionFailed as exc:
            self._emit(log, f"Error: {exc}\n")
            return "failure", {}
        self.file_env.update(action_ctx.env_updates)
        self.paths[:0] = reversed(action_ctx.path_updates)
        return "success", outputs

    def _emit(self, log: list[str], text: str) -> None:
        log.append(text)
        if self.replay.echo:
            self.replay.echo(text.replace(self.replay.token, "***"))

    def _process_env(self, env: dict[str, str], files: dict[str, Path]) -> dict[str, str]:
        gh = self.h.github
        own_bins = {str(Path(sys.prefix) / "bin"), str(Path(sys.executable).parent)}
        host_path = [
            p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p not in own_bins
        ]
        event_path = self.temp / "_github_workflow" / "event.json"
        if not event_path.exists():
            event_path.parent.mkdir(parents=True, exist_ok=True)
            event_path.write_text(json.dumps(gh["event"], indent=2))
        protected = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_EVENT_NAME": gh["event_name"],
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SHA": gh["sha"],
            "GITHUB_REF": gh["ref"],
            "GITHUB_REF_NAME": gh["ref_name"],
            "GITHUB_REF_TYPE": "branch",
            "GITHUB_HEAD_REF": gh["head_ref"],
            "GITHUB_BASE_REF": gh["base_ref"],
            "GITHUB_RUN_ID": gh["run_id"],
            "GITHUB_RUN_NUMBER": gh["run_number"],
            "GITHUB_RUN_ATTEMPT": gh["run_attempt"],
            "GITHUB_REPOSITORY": gh["repository"],
            "GITHUB_ACTOR": gh["actor"],
            "GITHUB_WORKFLOW": gh["workflow"],
            "GITHUB_JOB": self.job_id,
            "GITHUB_SERVER_URL": gh["server_url"],
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_TEMP": str(self.temp),
            "RUNNER_TOOL_CACHE": str(self.tool),
        }
        protected |= {f"GITHUB_{k}": str(v) for k, v in files.items()}
        base = {"HOME": str(self.home), "LANG": "C.UTF-8", "PATH": os.pathsep.join([*self.paths, *host_path])}
        merged = {**base, **env, **protected}
        merged["PATH"] = os.pathsep.join([*self.paths, *env.get("PATH", base["PATH"]).split(os.pathsep)])
        merged["PATH"] = os.pathsep.join(dict.fromkeys(merged["PATH"].split(os.pathsep)))
        return merged

    def _script(
        self, sid: str, step: dict[str, Any], ctx: Context, env: dict[str, str], log: list[str]
    ) -> tuple[str, dict[str, str], bool]:
        shell = step.get("shell") or self.shell_default
        if shell not in SHELLS:
            raise ReplayError(f"job {self.job_id} step {sid}: shell {shell!r} is not emulated")
        script = self.temp / f"{uuid.uuid4()}.sh"
        script.write_text(substitute(to_string(step["run"]), ctx))
        commands = self.temp / "_runner_file_commands"
        commands.mkdir(exist_ok=True)
        files = {name: commands / f"{name.lower()}_{uuid.uuid4().hex}" for name in ("OUTPUT", "ENV", "PATH")}
        files["STEP_SUMMARY"] = commands / f"step_summary_{uuid.uuid4().hex}"
        for path in files.values():
            path.touch()
        workdir = self.workspace / str(substitute(str(step.get("working-directory", ".")), ctx))
        step_limit = self.h.timeouts.get(f"{self.job_id}/{sid}")
        if step_limit is None and "timeout-minutes" in step:
            step_limit = float(to_string(substitute_value(step["timeout-minutes"], ctx))) * 60
        job_left = self.deadline - time.monotonic() if self.status != "cancelled" else CLEANUP_TIMEOUT_S
        limit = min(step_limit if step_limit is not None else job_left, max(job_left, 0.01))
        command = [str(script) if part == "{0}" else part for part in SHELLS[shell]]
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=self._process_env(env, files),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                self._emit(log, raw.decode("utf-8", "replace"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc, self.replay.grace)
        reader.join(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what the step left running in the background
        if timed_out:
            by_job = step_limit is None or job_left <= step_limit
            what = "The job has exceeded the maximum execution time" if by_job else "The action has timed out"
            self._emit(log, f"##[error]{what} ({limit:.1f} s).\n")
            outcome = "cancelled" if by_job else "failure"
        else:
            outcome = "success" if proc.returncode == 0 else "failure"
            if proc.returncode:
                self._emit(log, f"##[error]Process completed with exit code {proc.returncode}.\n")
        try:
            outputs = parse_file_command(files["OUTPUT"])
            self.file_env.update(parse_file_command(files["ENV"]))
        except ActionFailed as exc:
            self._emit(log, f"##[error]{exc}\n")
            return "failure", {}, timed_out
        added = [line.strip() for line in files["PATH"].read_text().splitlines() if line.strip()]
        self.paths[:0] = reversed(added)
        summary = files["STEP_SUMMARY"].read_text(encoding="utf-8")
        if summary:
            self.summary.append(summary if summary.endswith("\n") else summary + "\n")
        return outcome, outputs, timed_out

"""Secrets: a token in the remote URL or in the environment never reaches any output, log, commit,
result file or GitHub file (canary tokens, searched for in everything the tools produced)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.reliability.conftest import add_fake_session, write_step
from tests.reliability.harness import Workspace, git, make_workspace

CANARY_ENV = "canary-env-7f3a9c2e51d04b8e"  # not token-shaped: only the env-based redaction can catch it
CANARY_URL = "canary-url-d41d8cd98f00b204e9"  # the password of the remote URL
CANARY_GHP = "ghp_" + "C4naryT0ken" * 4  # GitHub-token-shaped
CANARIES = (CANARY_ENV, CANARY_URL, CANARY_GHP)
SECRET_URL = f"https://x-access-token:{CANARY_URL}@github.example.invalid/owner/repo.git"


def _secret_env(scratch: Path) -> dict[str, str]:
    return {
        "GITHUB_TOKEN": CANARY_ENV,
        "GH_TOKEN": CANARY_GHP,
        "NANECHO_TOKEN": CANARY_ENV,
        "GITHUB_OUTPUT": str(scratch / "github-output"),
        "GITHUB_STEP_SUMMARY": str(scratch / "step-summary.md"),
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_ACTIONS": "true",
    }


def _secret_workspace(scratch: Path, *, reachable: bool = True, config: dict | None = None) -> Workspace:
    ws = make_workspace(scratch / "ws", extra_env=_secret_env(scratch), config=config)
    if reachable:  # the token URL is what git is told; git itself is redirected to the local bare remote
        git(ws.root, "config", f"url.{ws.remote}.insteadOf", SECRET_URL, env=ws.env)
        git(ws.root, "remote", "set-url", "origin", SECRET_URL, env=ws.env)
    else:  # nothing listens on port 9: the push fails, and its error messages carry the URL
        git(
            ws.root,
            "remote",
            "set-url",
            "origin",
            SECRET_URL.replace("github.example.invalid", "127.0.0.1:9"),
        )
    return ws


def _git_objects(repo: Path) -> str:
    """Every object of a repository, decompressed (commit messages, trees, blobs)."""
    done = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo, capture_output=True, check=True
    )
    return done.stdout.decode("utf-8", "replace")


def _leaks(ws: Workspace, outputs: list[str], scratch: Path) -> list[str]:
    found = []
    for n, text in enumerate(outputs):
        found += [f"output {n} carries {c[:14]}…" for c in CANARIES if c in text]
    for path in sorted(scratch.rglob("*")):
        if not path.is_file() or path.is_symlink() or ".git" in path.parts or "remote.git" in path.parts:
            continue
        data = path.read_bytes().decode("utf-8", "replace")
        found += [f"{path.relative_to(scratch)} carries {c[:14]}…" for c in CANARIES if c in data]
    for repo in (ws.root, ws.remote):
        objects = _git_objects(repo)
        found += [f"a git object of {repo.name} carries {c[:14]}…" for c in CANARIES if c in objects]
    return found


def _session(
    ws: Workspace, outputs: list[str], session_id: str, start: int, loss: float, *, reports: bool = True
) -> Path:
    step = add_fake_session(ws, session_id, [loss], start=start)
    step["trigger"] = "push"
    step_json = write_step(ws, step, f"step-{session_id}.json")
    commands = [
        ws.select_args(ws.out / f"sel-{session_id}.json"),
        ws.meta_args("record", str(step_json)),
        ["summarize", "--root", str(ws.root), "--run", ws.run, "--step-summary"],
    ]
    for args in commands + ([ws.meta_args("list"), ws.meta_args("validate")] if reports else []):
        done = ws.tool(args)
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, (args[0], done.stderr)
    return step_json


def test_canary_tokens_in_env_and_remote_url_never_reach_outputs_files_or_commits(scratch: Path) -> None:
    ws = _secret_workspace(scratch, config={"schema_version": 1})
    outputs: list[str] = []
    step_json = _session(ws, outputs, "20261124T000000Z-aaaaaa", 0, 2.0)
    done = ws.tool(ws.commit_args(ws.out / "commit.json", step=step_json))
    outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr
    result = json.loads((ws.out / "commit.json").read_text())
    assert (result["status"], result["pushed"]) == ("pushed", True)
    assert result["remote"] == f"origin ({ws.remote})"  # the URL git resolved (insteadOf applied)
    outputs_file = (scratch / "github-output").read_text()
    assert "resume_path=" in outputs_file and "best_id=" in outputs_file and "sha=" in outputs_file
    assert "## " in (scratch / "step-summary.md").read_text()

    assert _leaks(ws, outputs, scratch) == []


def test_failed_push_to_a_token_url_reports_without_the_token(scratch: Path) -> None:
    ws = _secret_workspace(scratch, reachable=False, config={"schema_version": 1})
    outputs: list[str] = []
    step_json = _session(ws, outputs, "20261124T000000Z-aaaaaa", 0, 2.0, reports=False)
    args = ws.commit_args(ws.out / "commit.json", step=step_json) + ["--backoff", "0"]
    done = ws.tool(args)
    outputs += [done.stdout, done.stderr]

    assert done.returncode == 2
    assert done.stderr.startswith("Error: ") and len(done.stderr.strip().splitlines()) == 1
    result = json.loads((ws.out / "commit.json").read_text())
    assert (result["status"], result["pushed"]) == ("failed", False)
    assert result["bundle"] and Path(result["bundle"]).is_file()
    assert _leaks(ws, outputs, scratch) == []


def test_leak_search_finds_a_planted_canary(scratch: Path) -> None:
    ws = make_workspace(scratch / "ws", config={"schema_version": 1})
    (ws.out / "planted.txt").write_text(f"token={CANARY_ENV}")
    (ws.root / "leak.md").write_text(CANARY_GHP)
    git(ws.root, "add", "leak.md", env=ws.env)
    git(
        ws.root, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", f"msg {CANARY_URL}", env=ws.env
    )
    found = _leaks(ws, [f"stdout {CANARY_URL}"], scratch)
    assert found == [
        "output 0 carries canary-url-d41…",
        "ws/out/planted.txt carries canary-env-7f3…",
        "ws/repo/leak.md carries ghp_C4naryT0ke…",
        "a git object of repo carries canary-url-d41…",
        "a git object of repo carries ghp_C4naryT0ke…",
    ]


@pytest.mark.slow
def test_canary_tokens_never_reach_train_step_outputs(scratch: Path) -> None:
    ws = _secret_workspace(scratch)
    outputs: list[str] = []
    sel, step = ws.out / "sel.json", ws.out / "step.json"
    for args in (
        ws.select_args(sel),
        ws.train_args(step, iters=5),
        ws.meta_args("record", str(step)),
        ws.commit_args(ws.out / "commit.json", step=step),
    ):
        done = ws.tool(args)
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, (args[0], done.stderr)
    assert _leaks(ws, outputs, scratch) == []

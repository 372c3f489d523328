"""Real git repositories for progress-commit tests: a bare remote, clones, sessions recorded into them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nanecho_core.store import append_session, run_paths
from tests.factories import make_entry, make_session

BIN = Path(sys.executable).parent
RUN = ".training-progress/nanecho-cached-ci"
README = "# Demo\n\nIntro text.\n\n<!-- nanecho:progress:start -->\nno sessions yet\n<!-- nanecho:progress:end -->\n"
SEED_IDENTITY = ("-c", "user.name=Seed", "-c", "user.email=seed@example.com")


def isolated_git_env(home: Path) -> dict[str, str]:
    """Environment with no global/system git config (so no identity) and the venv's scripts first."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GITHUB_", "NANECHO_"))}
    environ.update(
        {
            "HOME": str(home),
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": str(BIN) + os.pathsep + environ.get("PATH", ""),
        }
    )
    return environ


def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr}")
    return proc.stdout.strip()


def make_remote(base: Path) -> Path:
    """A bare remote whose main branch holds one commit with a README (progress block included)."""
    remote = base / "remote.git"
    git(base, "init", "--quiet", "--bare", "-b", "main", str(remote))
    seed = base / "seed"
    git(base, "init", "--quiet", "-b", "main", str(seed))
    (seed / "README.md").write_text(README)
    git(seed, "add", "README.md")
    git(seed, *SEED_IDENTITY, "commit", "--quiet", "-m", "initial")
    git(seed, "push", "--quiet", str(remote), "main")
    return remote


def clone(remote: Path, dest: Path, *, depth: int | None = None) -> Path:
    args = ["clone", "--quiet"]
    if depth is not None:
        args += ["--depth", str(depth), "--no-local"]
    git(remote.parent, *args, f"file://{remote}" if depth else str(remote), str(dest))
    return dest


def session_id(writer: int, number: int) -> str:
    return f"20261124T{writer:02d}{number:02d}00Z-{writer:02x}{number:02x}aa"


def step_doc(writer: int, number: int, start: int = 0, end: int = 100) -> dict[str, Any]:
    """A schema-valid step.json with one checkpoint, unique per (writer, number)."""
    sid = session_id(writer, number)
    loss = round(2.5 - 0.01 * (writer * 10 + number), 4)
    entry = make_entry(sid, end, loss)
    return make_session(sid, start, end, start_val_loss=5.5, end_val_loss=loss, checkpoints=[entry])


def record_direct(root: Path, step: dict[str, Any]) -> None:
    """Append the session as meta-update record would (sessions only; used where metadata is not needed)."""
    append_session(run_paths(root, RUN), step)


def write_step(path: Path, step: dict[str, Any]) -> Path:
    path.write_text(json.dumps(step))
    return path


def remote_file(remote: Path, rel: str, ref: str = "main") -> str:
    return git(remote, "show", f"{ref}:{rel}")


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the work tree (outside .git) with its bytes: "nothing changed" assertions."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }

"""The `uses:` actions the NanEcho workflows rely on, emulated on this machine.

Each emulation follows the action's documented behaviour closely enough that the workflow's own
logic is what gets tested: checkout fetches the event's commit at depth 1 from a bare remote; the
cache is keyed, versioned by its paths, scoped by branch, immutable and evictable; artifacts are
per run, immutable, skip hidden files by default and keep the least-common-ancestor layout of
upload-artifact. Inputs an emulation does not know fail loudly (ReplayError).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ReplayError(Exception):
    """The workflow uses something the replay cannot emulate faithfully."""


class ActionFailed(Exception):
    """The emulated action failed the step (as it would on GitHub)."""


@dataclass
class ActionContext:
    """What an emulated action sees of its job."""

    workspace: Path
    runner_temp: Path
    tool_dir: Path
    github: dict[str, Any]
    permissions: dict[str, str]
    replay: Any  # harness.Replay: stores, remote, run registry
    log: Callable[[str], None]
    env: dict[str, str] = field(default_factory=dict)
    env_updates: dict[str, str] = field(default_factory=dict)
    path_updates: list[str] = field(default_factory=list)


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ActionFailed(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _bool(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ReplayError(f"input {name} must be true or false, got {value!r}")
    return text == "true"


def _lines(value: Any) -> list[str]:
    return [line.strip() for line in str(value or "").splitlines() if line.strip()]


def _resolve(workspace: Path, path: str) -> Path:
    expanded = os.path.expanduser(path)
    return Path(expanded) if os.path.isabs(expanded) else workspace / expanded


# --- actions/checkout ------------------------------------------------------------------------


def checkout(ctx: ActionContext, inputs: dict[str, Any]) -> dict[str, str]:
    """A fresh repository in the workspace holding the event's commit at depth 1, like checkout@v5."""
    depth = int(inputs.get("fetch-depth", 1))
    persist = _bool(inputs.get("persist-credentials", "true"), "persist-credentials")
    gh = ctx.github
    sha = gh["sha"]
    if ctx.workspace.exists():
        shutil.rmtree(ctx.workspace)
    ctx.workspace.mkdir(parents=True)
    git("init", "-q", cwd=ctx.workspace)
    git("remote", "add", "origin", str(ctx.replay.remote), cwd=ctx.workspace)
    is_pr = gh["event_name"] == "pull_request"
    local_ref = (
        f"refs/remotes/pull/{gh['event']['number']}/merge"
        if is_pr
        else f"refs/remotes/origin/{gh['ref_name']}"
    )
    fetch = ["fetch", "-q", "--no-tags", "--prune", "--no-recurse-submodules"]
    if depth > 0:
        fetch.append(f"--depth={depth}")
    git(*fetch, "origin", f"+{sha}:{local_ref}", cwd=ctx.workspace)
    if is_pr:
        git("checkout", "-q", "--force", local_ref, cwd=ctx.workspace)
    else:
        git("checkout", "-q", "--force", "-B", gh["ref_name"], local_ref, cwd=ctx.workspace)
    # Pushing needs the job token in git's config (persist-credentials) *and* contents: write.
    can_push = persist and ctx.permissions.get("contents") == "write"
    if not can_push:
        reason = "persist-credentials: false" if not persist else "the job token has contents: read"
        git("remote", "set-url", "--push", "origin", str(ctx.replay.denied_remote(reason)), cwd=ctx.workspace)
    ctx.log(
        f"checked out {sha[:12]} ({gh['ref']}) at depth {depth or 'full'}; push {'allowed' if can_push else 'denied'}"
    )
    return {"ref": gh["ref"], "commit": sha}


def make_denied_remote(path: Path, reason: str) -> Path:
    """A bare repository that rejects every push, standing in for a token without write access."""
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", str(path))
        hook = path / "hooks" / "pre-receive"
        hook.write_text(
            f"#!/bin/sh\necho 'Permission denied ({reason}): write access not granted' >&2\nexit 1\n"
        )
        hook.chmod(0o755)
    return path


def seed_remote(
    worktree: Path, remote: Path, branch: str = "main", extra: dict[str, str] | None = None
) -> str:
    """A bare remote whose one commit is the worktree's current files (tracked and untracked, not ignored)."""
    listing = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=worktree)
    staging = remote.with_name(remote.name + ".seed")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in filter(None, listing.split("\0")):
        source = worktree / name
        if source.is_file():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for name, text in (extra or {}).items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    ident = {**os.environ, "GIT_AUTHOR_NAME": "seed", "GIT_AUTHOR_EMAIL": "seed@example.invalid"}
    ident |= {"GIT_COMMITTER_NAME": "seed", "GIT_COMMITTER_EMAIL": "seed@example.invalid"}
    git("init", "-q", "-b", branch, cwd=staging)
    git("add", "-A", cwd=staging)
    git("commit", "-q", "-m", "Seed the replay remote from the working tree", cwd=staging, env=ident)
    git("init", "-q", "--bare", str(remote))
    git("push", "-q", str(remote), f"{branch}:{branch}", cwd=staging)
    git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=remote)
    shutil.rmtree(staging)
    return git("rev-parse", branch, cwd=remote)


# --- actions/setup-python ---------------------------------------------------------------------


def setup_python(ctx: ActionContext, inputs: dict[str, Any]) -> dict[str, str]:
    """A throwaway venv of this interpreter that also sees the project's installed packages."""
    wanted = str(inputs.get("python-version", "")).strip()
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted and wanted != have and not have.startswith(wanted + "."):
        raise ReplayError(f"setup-python asks for Python {wanted}; the replay runner has {have}")
    cache = str(inputs.get("cache", "")).strip()
    if cache not in ("", "pip"):
        raise ReplayError(f"setup-python cache: {cache} is not emulated")
    if cache:
        patterns = _lines(inputs.get("cache-dependency-path")) or ["**/requirements.txt"]
        if not any(list(ctx.workspace.glob(p)) for p in patterns):
            raise ActionFailed(f"No file in {ctx.workspace} matched to [{', '.join(patterns)}]")
    venv = ctx.tool_dir / "python"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
        parent = sysconfig.get_paths()["purelib"]
        # Sorted after the venv's own .pth files, so an editable install made in the replay wins.
        (site / "zz_replay_parent_site.pth").write_text(parent + "\n")
    ctx.path_updates.append(str(venv / "bin"))
    ctx.env_updates.update(
        {"pythonLocation": str(venv), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    )
    ctx.log(f"python {have} at {venv} (pip: no index, the project venv's packages visible)")
    return {"python-version": have, "python-path": str(venv / "bin" / "python"), "cache-hit": "false"}


# --- actions/cache ----------------------------------------------------------------------------


class CacheStore:
    """Cache entries on disk: one directory per entry with meta.json and data.tar."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def entries(self) -> list[dict[str, Any]]:
        found = []
        for meta in sorted(self.root.glob("*/meta.json")):
            found.append({**json.loads(meta.read_text()), "dir": str(meta.parent)})
        return sorted(found, key=lambda e: e["created"], reverse=True)

    def evict(self, key_prefix: str = "") -> int:
        """Delete entries whose key starts with key_prefix (all by default); returns how many."""
        evicted = 0
        for entry in self.entries():
            if entry["key"].startswith(key_prefix):
                shutil.rmtree(entry["dir"])
                evicted += 1
        return evicted

    def find(
        self, key: str, restore_keys: list[str], version: str, scopes: list[str]
    ) -> dict[str, Any] | None:
        entries = [e for e in self.entries() if e["version"] == version]
        for scope in scopes:
            in_scope = [e for e in entries if e["scope"] == scope]
            for candidate in [key, *restore_keys]:
                exact = [e for e in in_scope if e["key"] == candidate]
                prefix = [e for e in in_scope if e["key"].startswith(candidate)]
                if exact or prefix:
                    return (exact or prefix)[0]
        return None

    def save(self, key: str, version: str, scope: str, paths: list[Path], base: Path) -> bool:
        if any(e["key"] == key and e["version"] == version and e["scope"] == scope for e in self.entries()):
            return False
        entry = self.root / hashlib.sha256(f"{scope}\0{key}\0{version}".encode()).hexdigest()[:16]
        entry.mkdir()
        with tarfile.open(entry / "data.tar", "w") as tar:
            for path in paths:
                tar.add(path, arcname=os.path.relpath(path, base))
        meta = {"key": key, "version": version, "scope": scope, "created": time.time()}
        (entry / "meta.json").write_text(json.dumps(meta))
        return True


def _cache_version(paths: list[str]) -> str:
    return hashlib.sha256("|".join([*paths, "zstd"]).encode()).hexdigest()


def _cache_scopes(gh: dict[str, Any], default_branch: str) -> list[str]:
    scopes = [gh["ref"]]
    if gh.get("base_ref"):
        scopes.append(f"refs/heads/{gh['base_ref']}")
    scopes.append(f"refs/heads/{default_branch}")
    return list(dict.fromkeys(scopes))


def cache_restore(ctx: ActionContext, inputs: dict[str, Any]) -> dict[str, str]:
    key = str(inputs.get("key", "")).strip()
    paths = _lines(inputs.get("path"))
    if not key or not paths:
        raise ActionFailed("Input required and not supplied: key/path")
    if "," in key:
        raise ActionFailed(f"Key Validation Error: {key} cannot contain commas.")
    restore_keys = _lines(inputs.get("restore-keys"))
    fail_on_miss = _bool(inputs.get("fail-on-cache-miss", "false"), "fail-on-cache-miss")
    lookup_only = _bool(inputs.get("lookup-only", "false"), "lookup-only")
    scopes = _cache_scopes(ctx.github, ctx.replay.default_branch)
    entry = ctx.replay.cache.find(key, restore_keys, _cache_version(paths), scopes)
    if entry is None:
        if fail_on_miss:
            raise ActionFailed(
                f"Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: {key}"
            )
        ctx.log(f"Cache not found for input keys: {', '.join([key, *restore_keys])}")
        return {"cache-primary-key": key}
    if not lookup_only:
        with tarfile.open(Path(entry["dir"]) / "data.tar") as tar:
            tar.extractall(ctx.workspace, filter="data")
    ctx.log(f"Cache restored from key: {entry['key']}")
    return {
        "cache-hit": str(entry["key"] == key).lower(),
        "cache-primary-key": key,
        "cache-matched-key": entry["key"],
    }


def cache_save(ctx: ActionContext, inputs: dict[str, Any]) -> dict[str, str]:
    key = str(inputs.get("key", "")).strip()
    patterns = _lines(inputs.get("path"))
    if not key or not patterns:
        raise ActionFailed("Input required and not supplied: key/path")
    found = [p for pattern in patterns for p in _glob(ctx.workspace, pattern)]
    if not found:
        ctx.log(
            "Warning: Path Validation Error: Path(s) specified in the action for caching do(es) not exist, hence no cache is being saved."
        )
        return {}
    scope = ctx.github["ref"]
    if not ctx.replay.cache.save(key, _cache_version(patterns), scope, found, ctx.workspace):
        ctx.log(
            f"Warning: Failed to save: Unable to reserve cache with key {key}, another job may be creating this cache."
        )
        return {}
    ctx.log(f"Cache saved with key: {key}")
    return {}


def _glob(workspace: Path, pattern: str) -> list[Path]:
    path = _resolve(workspace, pattern)
    if any(ch in pattern for ch in "*?["):
        anchor = Path(path.anchor)
        return sorted(anchor.glob(str(path.relative_to(anchor))))
    return [path] if path.exists() else []

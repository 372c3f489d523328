"""A real NanEcho workspace for the reliability suite: a git repo with a bare remote, a tiny model and the
real CLIs (console scripts as subprocesses, Typer apps in-process), plus the oracles the suite checks with.

Shared by tests/reliability/ and benchmarks/reliability.py; torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from nanecho_core import schema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import dumps_canonical, sha256_file
from nanecho_core.store import empty_index

BIN = Path(sys.executable).parent
RUN = ".training-progress/nanecho-rel"
RUN_NAME = "nanecho-rel"

# Small enough that a session (torch import included) takes about a second on one CPU core.
TINY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0, "bias": False}
TINY_TRAIN = {
    "batch_size": 4,
    "eval_interval": 5,
    "eval_iters": 2,
    "log_interval": 5,
    "warmup_iters": 2,
    "lr_decay_iters": 400,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
}
CORPUS_BYTES = 40_000


def tiny_config() -> dict[str, Any]:
    """A --config override document for the tiny model (schema `config`)."""
    return {"schema_version": 1, "model": dict(TINY_MODEL), "train": dict(TINY_TRAIN)}


@contextmanager
def isolated_logging() -> Iterator[None]:
    """Undo logging set-up done by an in-process tool run (train-step binds a handler to the stderr of
    that run, which CliRunner closes afterwards), as a separate process would."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    try:
        yield
    finally:
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
        for lg in logging.Logger.manager.loggerDict.values():
            if isinstance(lg, logging.Logger) and all(lg is not s[0] for s in saved):
                lg.handlers.clear()


def _fast_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


FAST_TMP = _fast_tmp()


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, on tmpfs where there is one (thousands of fuzz cases create them)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=FAST_TMP))


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every subprocess: no inherited GitHub/NanEcho variables, an empty HOME
    (no global git identity), one thread per process so parallel campaigns do not fight."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "NANECHO_", "RUNNER_", "GIT_")) and k not in ("GH_TOKEN", "CI")
    }
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0",
            "NANECHO_HOST": "reliability-host",
        }
    )
    env.update(extra or {})
    return env


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=dict(env) if env else None, capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class Workspace:
    """Everything of one reliability scenario under `base`; `root` is the git work tree."""

    base: Path
    run: str = RUN
    env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.base / "repo"

    @property
    def remote(self) -> Path:
        return self.base / "remote.git"

    @property
    def out(self) -> Path:
        return self.base / "out"

    @property
    def config(self) -> Path:
        return self.base / "tiny.json"

    @property
    def corpus(self) -> Path:
        return self.base / "corpus.txt"

    @property
    def run_dir(self) -> Path:
        return self.root / self.run

    @property
    def metadata(self) -> Path:
        return self.run_dir / "cache" / "metadata.json"

    @property
    def sessions(self) -> Path:
        return self.run_dir / "sessions.jsonl"

    # Command lines of the five tools, against this workspace (all paths absolute).
    def select_args(self, out: Path, *, allow_fresh: bool = False) -> list[str]:
        args = ["ckpt-select", "--root", str(self.root), "--run", self.run, "--config", str(self.config)]
        return [*args, "--out", str(out), *(["--allow-fresh"] if allow_fresh else [])]

    def train_args(self, out: Path, *, resume: Path | None = None, iters: int = 10) -> list[str]:
        args = ["train-step", "--root", str(self.root), "--run", self.run, "--config", str(self.config)]
        args += ["--corpus", str(self.corpus), "--iters", str(iters), "--device", "cpu", "--out", str(out)]
        return [*args, *(["--resume", str(resume)] if resume else [])]

    def meta_args(self, sub: str, *rest: str) -> list[str]:
        return ["meta-update", sub, "--root", str(self.root), "--run", self.run, *rest]

    def commit_args(self, out: Path, *, step: Path | None = None, push: bool = True) -> list[str]:
        args = ["progress-commit", "--root", str(self.root), "--run", self.run, "--out", str(out)]
        args += ["--remote", "origin", "--branch", "main", "--retries", "2"]
        return [*args, *(["--message-from", str(step)] if step else []), *(["--push"] if push else [])]

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a console script as its own process group (so kill -9 reaches git children too)."""
        return subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            cwd=self.base,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **kwargs,
        )

    def tool(
        self, args: Sequence[str], *, timeout: float = 300, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a console script to completion."""
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            cwd=self.base,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )


def make_workspace(
    base: Path,
    *,
    with_remote: bool = True,
    extra_env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Workspace:
    """A fresh git repo (branch main, one commit) with a bare `origin`, a config (default: the tiny
    model; `{"schema_version": 1}` is the ci preset, which tests/factories.py entries match) and a corpus."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "home").mkdir(exist_ok=True)
    ws = Workspace(base=base, env=clean_env(base / "home", extra_env))
    ws.out.mkdir(exist_ok=True)
    ws.config.write_text(dumps_canonical(dict(config or tiny_config())), encoding="utf-8")
    corpus = resources.files("nanecho_core").joinpath("corpus/tinyshakespeare.txt").read_bytes()
    ws.corpus.write_bytes(corpus[:CORPUS_BYTES])
    root = ws.root
    root.mkdir()
    git(root, "init", "-q", "-b", "main", env=ws.env)
    progress = root / ".training-progress"
    progress.mkdir()
    (progress / ".gitignore").write_text("*.pt\n*.pth\n*.bin\n*.safetensors\nartifacts/\n.lock\n*.tmp\n")
    (root / "README.md").write_text("# reliability scenario\n")
    identity = ["-c", "user.name=seed", "-c", "user.email=seed@example.invalid"]
    git(root, "add", "README.md", ".training-progress/.gitignore", env=ws.env)
    git(root, *identity, "commit", "-q", "-m", "seed", env=ws.env)
    if with_remote:
        git(base, "init", "-q", "--bare", "-b", "main", str(ws.remote), env=ws.env)
        git(root, "remote", "add", "origin", str(ws.remote), env=ws.env)
        git(root, "push", "-q", "origin", "main", env=ws.env)
    return ws


# ---------------------------------------------------------------------------------------------------
# Oracles: what the suite believes about a run directory, computed independently of the tools.


def one_error_line(stderr: str) -> str | None:
    """None when stderr is exactly one `Error: …` line without a traceback, else what is wrong."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback" in stderr:
        return f"traceback on stderr: {stderr[-400:]!r}"
    if len(lines) != 1:
        return f"expected one stderr line, got {len(lines)}: {stderr[-400:]!r}"
    if not lines[0].startswith("Error: "):
        return f"stderr line does not start with 'Error: ': {lines[0][:200]!r}"
    return None


# Not state: the writers' flock file and the index's verified-bytes stamp (a cache any reader may drop
# or write, never committed).
NOT_STATE = (".lock", ".metadata.verified")


def tree_digest(base: Path, *, skip: Sequence[str] = NOT_STATE) -> dict[str, str]:
    """relative path → content sha256 (files) or `-> target` (symlinks), for 'nothing changed' checks."""
    digest: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                digest[(here / name).relative_to(base).as_posix()] = "-> " + os.readlink(here / name)
        for name in filenames:
            path = here / name
            rel = path.relative_to(base).as_posix()
            if name in skip:
                continue
            if path.is_symlink():
                digest[rel] = "-> " + os.readlink(path)
            else:
                digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def diff_digests(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    changes = [f"+{p}" for p in after if p not in before]
    changes += [f"-{p}" for p in before if p not in after]
    changes += [f"~{p}" for p in before if p in after and before[p] != after[p]]
    return sorted(changes)


def is_valid_entry(entry: Any) -> bool:
    """Whether `entry` is a schema-valid checkpoint index entry."""
    doc = empty_index(RUN_NAME)
    doc["checkpoints"] = [entry]
    try:
        schema.validate(doc, "metadata")
    except NanechoError:
        return False
    return True


def verified_checkpoints(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every checkpoint whose save completed: a valid sidecar (or `ok` index entry) whose file exists
    inside the run dir with the recorded size and sha256. Keyed by id."""
    candidates: list[dict[str, Any]] = []
    ckpt_dir = run_dir / "cache" / "checkpoints"
    if ckpt_dir.is_dir():
        for sidecar in sorted(ckpt_dir.glob("*.json")):
            try:
                candidates.append(json.loads(sidecar.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
    metadata = run_dir / "cache" / "metadata.json"
    if metadata.exists():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            candidates += [e for e in json.loads(metadata.read_text("utf-8")).get("checkpoints", []) if e]
    found: dict[str, dict[str, Any]] = {}
    for entry in candidates:
        if not is_valid_entry(entry) or entry.get("status") not in ("ok", None):
            continue
        path = run_dir / entry["file"]
        if path.is_symlink() or not path.is_file() or path.stat().st_size != entry["bytes"]:
            continue
        if sha256_file(path) == entry["sha256"]:
            found[entry["id"]] = entry
    return found


def lineage_root(
    selection: Mapping[str, Any], available: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The best checkpoint a selection continued from when it resumed a later one of its lineage."""
    prefix = "not needed: best, continued by its descendant "
    for item in selection["rejected"]:
        if item["reason"].startswith(prefix):
            return available.get(
                item["id"], {"id": item["id"], "iteration": 0, "metrics": {"val_loss": None}}
            )
    return None


def best_val_loss(entries: Mapping[str, Mapping[str, Any]]) -> float | None:
    losses = [e["metrics"]["val_loss"] for e in entries.values() if e["metrics"]["val_loss"] is not None]
    return min(losses) if losses else None


def session_ids_in(text: str) -> set[str]:
    """Session ids of every parseable line of a sessions.jsonl text (a torn tail line is ignored)."""
    ids: set[str] = set()
    for line in text.splitlines():
        try:
            ids.add(json.loads(line)["session_id"])
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def remote_sessions(ws: Workspace, branch: str = "main") -> set[str]:
    """Session ids in sessions.jsonl at the tip of the bare remote's branch."""
    show = subprocess.run(
        ["git", "show", f"{branch}:{ws.run}/sessions.jsonl"],
        cwd=ws.remote,
        env=ws.env,
        capture_output=True,
        text=True,
        check=False,
    )
    return session_ids_in(show.stdout) if show.returncode == 0 else set()


def fsck(repo: Path, env: Mapping[str, str]) -> str | None:
    """None when `git fsck --full` passes, else its complaint."""
    done = subprocess.run(
        ["git", "fsck", "--full", "--no-progress"], cwd=repo, env=dict(env), capture_output=True, text=True
    )
    if done.returncode != 0:
        return f"git fsck {repo.name}: {done.stderr.strip()[-300:]}"
    return None

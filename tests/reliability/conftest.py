from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanecho_core.fsio import atomic_write_json
from tests.factories import make_entry, make_session, write_fake_checkpoint
from tests.reliability.harness import RUN_NAME, Workspace, make_workspace, scratch_dir
from tests.reliability.killfuzz import inprocess_runner


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A temporary directory on tmpfs where available."""
    path = scratch_dir("nanecho-rel-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_ws(scratch: Path) -> Workspace:
    """A workspace (git repo + bare origin) whose config is the ci preset, which fake entries match."""
    return make_workspace(scratch / "ws", config={"schema_version": 1})


def add_fake_session(ws: Workspace, session_id: str, losses: list[float], start: int = 0) -> dict:
    """Write checkpoints (fake weights + sidecars) of one session and return its step.json document."""
    entries = []
    parent = None
    for n, loss in enumerate(losses, start=1):
        entry = make_entry(
            session_id, start + 100 * n, loss, parent_id=parent, payload=f"{session_id}/{n}".encode()
        )
        write_fake_checkpoint(ws.run_dir, entry, f"{session_id}/{n}".encode())
        entries.append(entry)
        parent = entry["id"]
    step = make_session(
        session_id,
        start,
        start + 100 * len(losses),
        run=RUN_NAME,
        end_val_loss=losses[-1],
        checkpoints=entries,
    )
    return step


def write_step(ws: Workspace, step: dict, name: str = "step.json") -> Path:
    path = ws.out / name
    atomic_write_json(path, step)
    return path


@pytest.fixture
def cli():
    """Run ckpt-select / meta-update in-process: (exit code, stdout, stderr)."""
    return inprocess_runner()

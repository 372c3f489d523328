"""Disk full and size limits: a write that fails part-way leaves the previous state intact and is
reported as one `Error: …` line. Simulated with RLIMIT_FSIZE (set in the child before exec: writes past
the limit fail with EFBIG, git is killed by SIGXFSZ) and, where the machine allows mounting, a real tiny
tmpfs (ENOSPC)."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nanecho_core.fsio import dumps_line
from tests.factories import make_session
from tests.reliability.conftest import add_fake_session, write_step
from tests.reliability.harness import (
    NOT_STATE,
    RUN_NAME,
    Workspace,
    fsck,
    git,
    make_workspace,
    one_error_line,
    tree_digest,
)


def file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _recorded(ws: Workspace, cli, session_id: str, loss: float, start: int) -> dict:  # type: ignore[no-untyped-def]
    step = add_fake_session(ws, session_id, [loss], start=start)
    assert cli(ws.meta_args("record", str(write_step(ws, step, f"{session_id}.json"))))[0] == 0
    return step


def _state(ws: Workspace) -> dict[str, str]:
    """The run's files (the `.metadata.verified` stamp is a cache a writer may drop, not state)."""
    return tree_digest(ws.run_dir, skip=NOT_STATE)


def _leftover_temp_files(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.run_dir.rglob("*") if p.name.endswith(".tmp"))


def test_metadata_write_past_the_size_limit_keeps_the_previous_index_and_log(fake_ws: Workspace, cli) -> None:
    _recorded(fake_ws, cli, "20261124T000000Z-aaaaaa", 2.0, 0)
    step = add_fake_session(fake_ws, "20261124T000100Z-bbbbbb", [1.9], start=100)
    step_json = write_step(fake_ws, step, "second.json")
    before = _state(fake_ws)
    limit = fake_ws.metadata.stat().st_size + 200  # the grown index cannot be written, the old one fits

    done = fake_ws.tool(fake_ws.meta_args("record", str(step_json)), preexec_fn=file_size_limit(limit))

    assert done.returncode == 2, done.stderr
    assert one_error_line(done.stderr) is None, done.stderr
    assert "File too large" in done.stderr and "metadata.json" in done.stderr
    assert _state(fake_ws) == before
    assert _leftover_temp_files(fake_ws) == []
    retry = fake_ws.tool(fake_ws.meta_args("record", str(step_json)))  # room again: the same step records
    assert retry.returncode == 0, retry.stderr
    assert cli(fake_ws.meta_args("validate"))[0] == 0


def test_sessions_append_past_the_size_limit_leaves_no_torn_line(fake_ws: Workspace, cli) -> None:
    history = [make_session(f"20261123T0000{n:02d}Z-ffffff", n, n + 1, run=RUN_NAME) for n in range(8)]
    fake_ws.sessions.parent.mkdir(parents=True, exist_ok=True)
    fake_ws.sessions.write_text("".join(dumps_line(s) + "\n" for s in history))
    step = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0], start=100)
    step_json = write_step(fake_ws, step)
    log_before = fake_ws.sessions.read_bytes()
    limit = len(log_before) + 100  # the index (smaller) fits; the log line crosses the limit mid-write

    done = fake_ws.tool(fake_ws.meta_args("record", str(step_json)), preexec_fn=file_size_limit(limit))

    assert done.returncode == 2, done.stdout + done.stderr
    assert one_error_line(done.stderr) is None, done.stderr
    assert "sessions.jsonl" in done.stderr and "File too large" in done.stderr
    assert fake_ws.sessions.read_bytes() == log_before
    # With room again, recording the same step completes the session and the log stays readable.
    assert fake_ws.tool(fake_ws.meta_args("record", str(step_json))).returncode == 0
    assert cli(fake_ws.meta_args("validate"))[0] == 0
    later = add_fake_session(fake_ws, "20261124T000100Z-bbbbbb", [1.9], start=200)
    assert cli(fake_ws.meta_args("record", str(write_step(fake_ws, later, "later.json"))))[0] == 0
    assert cli(fake_ws.meta_args("validate"))[0] == 0
    lines = fake_ws.sessions.read_text().splitlines()
    assert [json.loads(line)["session_id"] for line in lines[-2:]] == [
        step["session_id"],
        later["session_id"],
    ]


def test_torn_tail_left_by_a_crash_does_not_break_the_sessions_log(fake_ws: Workspace, cli) -> None:
    first = _recorded(fake_ws, cli, "20261124T000000Z-aaaaaa", 2.0, 0)
    with fake_ws.sessions.open("ab") as handle:
        handle.write(b'{"schema_version": 1, "run": "nanecho-rel", "sess')  # an append cut short
    second = _recorded(fake_ws, cli, "20261124T000100Z-bbbbbb", 1.9, 100)

    assert cli(fake_ws.meta_args("validate"))[0] == 0
    ids = [json.loads(line)["session_id"] for line in fake_ws.sessions.read_text().splitlines()]
    assert ids == [first["session_id"], second["session_id"]]


def test_commit_past_the_size_limit_leaves_head_and_tree_and_the_next_commit_pushes(
    fake_ws: Workspace, cli
) -> None:
    step = _recorded(fake_ws, cli, "20261124T000000Z-aaaaaa", 2.0, 0)
    step_json = fake_ws.out / "20261124T000000Z-aaaaaa.json"
    head = git(fake_ws.root, "rev-parse", "HEAD", env=fake_ws.env)
    work = _state(fake_ws)
    out = fake_ws.out / "commit.json"

    done = fake_ws.tool(fake_ws.commit_args(out, step=step_json), preexec_fn=file_size_limit(256))

    assert done.returncode == 2, done.stdout + done.stderr
    assert one_error_line(done.stderr) is None, done.stderr
    assert git(fake_ws.root, "rev-parse", "HEAD", env=fake_ws.env) == head
    assert _state(fake_ws) == work
    assert fsck(fake_ws.root, fake_ws.env) is None
    retry = fake_ws.tool(fake_ws.commit_args(out, step=step_json))
    assert retry.returncode == 0, retry.stderr
    assert json.loads(out.read_text())["pushed"] is True
    assert fsck(fake_ws.root, fake_ws.env) is None and fsck(fake_ws.remote, fake_ws.env) is None
    assert step["session_id"] in git(
        fake_ws.remote, "show", f"main:{fake_ws.run}/sessions.jsonl", env=fake_ws.env
    )


@pytest.fixture
def tiny_fs(scratch: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (real ENOSPC); skipped where mounting is not allowed."""
    mount = scratch / "tiny"
    mount.mkdir()
    tried = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {tried.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_record_on_a_full_filesystem_keeps_the_previous_index(tiny_fs: Path, scratch: Path, cli) -> None:
    ws = make_workspace(scratch / "ws", with_remote=False, config={"schema_version": 1})
    ws.base = tiny_fs  # the run lives on the tiny filesystem; git stays outside it
    shutil.copytree(scratch / "ws" / "repo", tiny_fs / "repo", ignore=shutil.ignore_patterns(".git"))
    ws.out.mkdir(exist_ok=True)
    _recorded(ws, cli, "20261124T000000Z-aaaaaa", 2.0, 0)
    step = add_fake_session(ws, "20261124T000100Z-bbbbbb", [1.9], start=100)
    step_json = scratch / "second.json"
    step_json.write_text(json.dumps(step))
    for cache in ws.run_dir.rglob(".metadata.verified"):
        cache.unlink()  # a writer drops this stamp first: freeing its page would make room
    filler = tiny_fs / "filler"
    with filler.open("wb", buffering=0) as handle:  # fill the filesystem to the last byte
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass
    before = _state(ws)

    code, _out, err = cli(ws.meta_args("record", str(step_json)))

    assert code == 2, err
    assert one_error_line(err) is None, err
    assert "No space left on device" in err
    assert _state(ws) == before
    assert _leftover_temp_files(ws) == []
    filler.unlink()
    assert cli(ws.meta_args("record", str(step_json)))[0] == 0
    assert cli(ws.meta_args("validate"))[0] == 0

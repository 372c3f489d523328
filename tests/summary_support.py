"""Builders of real run directories for the summarize tests (sessions.jsonl + metadata.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanecho_core import fastschema, store
from nanecho_core.fsio import dumps_line
from nanecho_core.store import RunPaths
from tests.factories import make_entry, make_session

CI = ".training-progress/nanecho-cached-ci"


def session(
    hour: int,
    start: int,
    end: int,
    *,
    source: str = "cache",
    start_loss: float | None = 3.0,
    end_loss: float | None = 2.0,
    resumed_from: str | None = None,
    run: str = "nanecho-cached-ci",
    minutes: int = 30,
    preset: str = "ci",
    **extra: Any,
) -> dict[str, Any]:
    """A session that starts at `hour`:00 on 2026-11-24 and lasts `minutes`."""
    sid = f"20261124T{hour:02d}0000Z-{hour:06x}"
    if source != "fresh" and resumed_from is None and start > 0:
        resumed_from = f"ckpt-20261124T000000Z-000000-{start:08d}"
    record = make_session(
        sid,
        start,
        end,
        run=run,
        resumed_from=None if source == "fresh" else resumed_from,
        resume_source=source,
        start_val_loss=start_loss,
        end_val_loss=end_loss,
    )
    record["started_at"] = f"2026-11-24T{hour:02d}:00:00Z"
    record["ended_at"] = (
        f"2026-11-24T{hour:02d}:{minutes:02d}:00Z" if minutes < 60 else f"2026-11-24T{hour + 1:02d}:00:00Z"
    )
    record["preset"] = preset
    record.update(extra)
    return record


def write_run(
    root: Path,
    sessions: list[dict[str, Any]],
    run: str = CI,
    entries: list[dict[str, Any]] | None = None,
    best_id: str | None = None,
) -> RunPaths:
    root.mkdir(parents=True, exist_ok=True)
    paths = store.run_paths(root, run)
    paths.dir.mkdir(parents=True, exist_ok=True)
    if sessions:  # one write, not one fsync'd append per line: some tests build thousands
        for record in sessions:
            fastschema.validate(record, "session", paths.sessions)
        text = "".join(dumps_line(r) + "\n" for r in sessions)
        with open(paths.sessions, "a", encoding="utf-8") as handle:
            handle.write(text)
    if entries is not None:
        index = store.empty_index(paths.name)
        index["checkpoints"] = entries
        index["best_id"] = best_id
        index["latest_id"] = entries[-1]["id"] if entries else None
        store.save_metadata(paths, index)
    return paths


def three_session_run(root: Path) -> RunPaths:
    """fresh 0→100, resume 100→200, then a fresh restart 0→100 (a reset)."""
    return write_run(
        root,
        [
            session(1, 0, 100, source="fresh", start_loss=None, end_loss=2.5),
            session(2, 100, 200, start_loss=2.5, end_loss=2.0),
            session(3, 0, 100, source="fresh", start_loss=None, end_loss=2.6),
        ],
    )


__all__ = ["CI", "make_entry", "session", "three_session_run", "write_run"]


def one_session_full_run(root: Path) -> RunPaths:
    """A second run (`full` preset) with one fresh session, for cross-run comparisons."""
    return write_run(
        root,
        [
            session(
                1,
                0,
                400,
                source="fresh",
                start_loss=None,
                end_loss=1.5,
                run="nanecho-cached-full",
                preset="full",
            )  # fmt: skip
        ],
        run=".training-progress/nanecho-cached-full",
    )

"""The run directory: paths, the metadata index, the sessions log, and the writers' lock."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import (
    append_line,
    atomic_write_bytes,
    dumps_canonical,
    dumps_line,
    exclusive_lock,
    is_blank,
    parse_json,
    read_bytes,
    read_json,
    refuse_device,
    resolved,
    safe_join,
    sha256_bytes,
)

METADATA_FILE = "cache/metadata.json"
SESSIONS_FILE = "sessions.jsonl"
SUMMARY_FILE = "training_summary.json"
CHECKPOINTS_DIR = "cache/checkpoints"
DATA_CACHE_DIR = "cache/data"
LOCK_FILE = ".lock"
# sha256 of metadata.json bytes that passed validation (written by writers and by the first reader
# of a fresh checkout): when the file still has exactly those bytes, readers skip re-validation
# (checking 10,000 entries costs more than the 0.5 s budget of `meta-update record`). Local, never
# committed; a stale stamp only costs a re-validation.
VERIFIED_FILE = ".metadata.verified"
PROGRESS_DIR = ".training-progress"
PROGRESS_FILE = "PROGRESS.md"  # beside the runs, written by summarize


@dataclass(frozen=True)
class RunPaths:
    """Where a run's files live. `root` is the repository root, `dir` the run directory inside it."""

    root: Path
    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def metadata(self) -> Path:
        return self.dir / METADATA_FILE

    @property
    def sessions(self) -> Path:
        return self.dir / SESSIONS_FILE

    @property
    def summary(self) -> Path:
        return self.dir / SUMMARY_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / CHECKPOINTS_DIR

    @property
    def data_cache_dir(self) -> Path:
        return self.dir / DATA_CACHE_DIR

    @property
    def lock(self) -> Path:
        return self.dir / LOCK_FILE

    @property
    def verified(self) -> Path:
        return self.dir / VERIFIED_FILE

    def checkpoint_file(self, relative: str) -> Path:
        """A checkpoint's `file` field resolved under the run dir, refusing escapes."""
        return safe_join(self.dir, relative, what="checkpoint file")

    def relative(self, path: Path) -> str:
        return resolved(path).relative_to(resolved(self.dir)).as_posix()


def refuse_kept_file(path: Path, paths: RunPaths, option: str) -> None:
    """An output option must not name a file the tools keep: a run's index, session log or summary,
    anything under its cache/, or PROGRESS.md. Writing a result there replaces the run's history
    (and the next tool then fails on a document it cannot read)."""
    target = os.path.realpath(path)  # never raises, symlink loops included
    kept = [paths.metadata, paths.sessions, paths.summary, paths.root / PROGRESS_DIR / PROGRESS_FILE]
    cache = os.path.realpath(paths.metadata.parent)  # cache/: the index, checkpoints, token cache
    if target in {os.path.realpath(p) for p in kept} or target.startswith(cache + os.sep):
        raise NanechoError(f"{option} names a file that run {paths.name} keeps; write it elsewhere", path)


def run_paths(root: str | os.PathLike[str], run: str | os.PathLike[str]) -> RunPaths:
    """Resolve `--root`/`--run`; the run directory must lie inside the root."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise NanechoError("root directory not found", root_path)
    run_text = os.fspath(run)
    run_path = Path(run_text)
    if run_path.is_absolute():
        try:
            run_text = resolved(run_path).relative_to(resolved(root_path)).as_posix()
        except ValueError:
            raise NanechoError(f"run directory is outside the root {root_path}", run_path) from None
    run_dir = safe_join(root_path, run_text, what="run directory")
    name = run_dir.name
    schema_ok = name and name[0].isalnum() and all(c.isalnum() or c in "._-" for c in name)
    if not schema_ok:
        raise NanechoError("run directory name must be letters, digits, '.', '_' or '-'", run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NanechoError("run path exists and is not a directory", run_dir)
    return RunPaths(root=root_path, dir=run_dir)


METADATA_VERSION = 2


def empty_index(run: str) -> dict[str, Any]:
    return {
        "schema_version": METADATA_VERSION,
        "run": run,
        "quality": {"metric": "val_loss", "mode": "min"},
        "best_id": None,
        "latest_id": None,
        "checkpoints": [],
    }


def load_metadata(paths: RunPaths, *, missing_ok: bool = True) -> dict[str, Any]:
    """The validated index; an empty one when the file does not exist yet (and missing_ok)."""
    found = read_metadata(paths)
    if found is None:
        if missing_ok:
            return empty_index(paths.name)
        raise NanechoError("metadata index not found", paths.metadata)
    return parse_metadata(paths, *found)


def read_metadata(paths: RunPaths) -> tuple[bytes, os.stat_result] | None:
    """The raw bytes of metadata.json and the stat of the very file they came from (None: absent)."""
    try:
        refuse_device(paths.metadata)
        with open(paths.metadata, "rb") as handle:
            return handle.read(), os.fstat(handle.fileno())
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise NanechoError("is a directory, expected a JSON file", paths.metadata) from exc
    except OSError as exc:
        raise NanechoError(f"cannot read: {exc.strerror or exc}", paths.metadata) from exc


def read_metadata_bytes(paths: RunPaths) -> bytes | None:
    found = read_metadata(paths)
    return None if found is None else found[0]


def parse_metadata(paths: RunPaths, data: bytes, info: os.stat_result | None = None) -> dict[str, Any]:
    """Parse metadata bytes; validation is skipped only when the bytes are the ones last verified."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NanechoError("not UTF-8 text", paths.metadata) from exc
    doc = parse_json(text, paths.metadata)
    if not is_verified(paths, data, info):
        fastschema.validate(doc, "metadata", paths.metadata)
        if info is not None:
            _try_stamp(paths, data, info)
    return dict(doc)


def _try_stamp(paths: RunPaths, data: bytes, info: os.stat_result) -> None:
    """Remember that these bytes passed validation (a fresh CI checkout validates once, not per tool).

    Sound under races: the stamp names exact bytes, so a stale stamp only costs a re-validation.
    """
    with contextlib.suppress(NanechoError):  # read-only checkout: validation happens again next time
        atomic_write_bytes(paths.verified, _stamp(data, info))


def is_verified(paths: RunPaths, data: bytes, info: os.stat_result | None = None) -> bool:
    """True when `data` is byte-identical to metadata bytes that passed validation.

    With `info` (the fstat of the file `data` was read from), an unchanged (inode, size, mtime_ns)
    proves it without hashing 13 MB; otherwise the sha256 decides.
    """
    try:
        digest, schema_digest, file_key = paths.verified.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if schema_digest != fastschema.schema_digest("metadata"):
        return False
    if info is not None and file_key == _file_key(info) and info.st_size == len(data):
        return True
    return digest == sha256_bytes(data)


def _file_key(info: os.stat_result) -> str:
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def _stamp(data: bytes, info: os.stat_result) -> bytes:
    # The schema's own digest is part of the stamp: a changed schema re-validates old bytes.
    return f"{sha256_bytes(data)} {fastschema.schema_digest('metadata')} {_file_key(info)}\n".encode("ascii")


def save_metadata(paths: RunPaths, doc: dict[str, Any]) -> None:
    """Validate, then write atomically: a document that fails validation writes nothing."""
    fastschema.validate(doc, "metadata", paths.metadata)
    write_verified_metadata(paths, dumps_canonical(doc).encode("utf-8"))


def write_verified_metadata(paths: RunPaths, data: bytes) -> None:
    """Write metadata bytes the caller has validated, and stamp them as verified."""
    paths.verified.unlink(missing_ok=True)  # a crash between the two writes must not trust stale bytes
    atomic_write_bytes(paths.metadata, data)
    atomic_write_bytes(paths.verified, _stamp(data, os.stat(paths.metadata)))


def read_sessions(paths: RunPaths) -> list[dict[str, Any]]:
    """Every session record, in file order. A torn last line (a crash mid-append) is skipped."""
    if not paths.sessions.exists():
        return []
    try:
        lines = read_bytes(paths.sessions).decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise NanechoError(f"cannot read sessions log: {exc}", paths.sessions) from exc
    records: list[dict[str, Any]] = []
    last = max((i for i, line in enumerate(lines) if not is_blank(line)), default=-1)
    for number, line in enumerate(lines):
        if is_blank(line):
            continue
        try:
            record = parse_json(line, paths.sessions)
        except NanechoError:
            if number == last:
                continue  # torn tail from an interrupted append: the session was never completed
            raise NanechoError(f"line {number + 1} is not valid JSON", paths.sessions) from None
        fastschema.validate(record, "session", f"{paths.sessions}:{number + 1}")
        records.append(record)
    return records


def append_session(paths: RunPaths, record: dict[str, Any]) -> None:
    """Append one validated session record (without step.json's `checkpoints`) to sessions.jsonl."""
    line_doc = {k: v for k, v in record.items() if k != "checkpoints"}
    fastschema.validate(line_doc, "session", paths.sessions)
    append_line(paths.sessions, dumps_line(line_doc))


@contextmanager
def locked(paths: RunPaths) -> Iterator[None]:
    """Serialise local writers of one run (flock on <run>/.lock; released on process death)."""
    try:
        paths.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where the run directory or a parent should be
        raise NanechoError(f"cannot create the run directory: {exc.strerror or exc}", paths.dir) from exc
    with exclusive_lock(paths.lock):
        yield


def read_document(path: str | os.PathLike[str], name: str) -> Any:
    """Read and validate an input document (step.json, selection.json, …) of schema `name`."""
    return fastschema.validate(read_json(path), name, path)

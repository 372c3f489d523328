"""Crash-safe file I/O: atomic writes, canonical JSON, hashing, and path containment."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from nanecho_core.errors import NanechoError

HASH_CHUNK = 1 << 20


def dumps_canonical(doc: Any) -> str:
    """Deterministic JSON: sorted keys, 2-space indent, trailing newline (minimal git diffs)."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def dumps_line(doc: Any) -> str:
    """Deterministic single-line JSON for append-only logs such as sessions.jsonl."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a temp file in the target's directory; on success fsync + rename over the target.

    A crash (or exception) at any instant leaves the previous file untouched and no partial target.
    A device or a pipe (/dev/null, a FIFO) is written in place: renaming over it would replace the
    node itself with a regular file, and a stream has no previous content to keep. One of this
    process's own descriptors (/dev/stdout, /dev/fd/N) is written through a duplicate of it, at its
    current offset: reopening it would truncate `> out` and write over what is already there.
    """
    target = Path(path)
    own = _own_descriptor(target)
    if own is not None:
        sys.stdout.flush()  # what the tool printed so far comes first
        with os.fdopen(os.dup(own), mode) as handle:
            yield handle
        return
    if _is_stream(target):
        with open(target, mode) as handle:
            yield handle
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _own_descriptor(path: Path) -> int | None:
    """N when `path` names this process's descriptor N: /dev/stdout (a link to /proc/self/fd/1),
    /dev/fd/N or /proc/self/fd/N; else None."""
    try:
        link = os.readlink(path)
    except OSError:
        link = ""
    if link.startswith("/proc/self/fd/") and link[len("/proc/self/fd/") :].isdecimal():
        return int(link[len("/proc/self/fd/") :])
    if not path.name.isdecimal():
        return None
    directory = os.path.realpath(path.parent)  # /dev/fd and /proc/self resolve to /proc/<pid>/fd
    return int(path.name) if directory == f"/proc/{os.getpid()}/fd" else None


def _is_stream(path: Path) -> bool:
    """An existing path that is neither a regular file nor a directory: a device, a FIFO, a socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def file_holds(path: str | os.PathLike[str], data: bytes) -> bool:
    """True when `path` is a regular file holding exactly `data`; a device or a pipe is never read."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        with open(path, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError:
        return False


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes atomically (temp in the same directory, fsync, rename, directory fsync)."""
    try:
        with atomic_writer(path, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise NanechoError(f"cannot write: {exc.strerror or exc}", path) from exc


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], doc: Any) -> None:
    """Write a document as canonical JSON, atomically."""
    atomic_write_text(path, dumps_canonical(doc))


@contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an flock on `path` (created if needed); the kernel releases it if the process dies."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # e.g. a directory named .lock
        raise NanechoError(f"cannot open the lock file: {exc.strerror or exc}", path) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line durably (O_APPEND + fsync), all or nothing.

    A write cut short (disk full, file-size limit) is rolled back, so no partial line is left. A torn
    tail left by an earlier crash is not a record (its writer never finished): it is dropped rather
    than kept as an unreadable middle line that would break every later read of the log.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = _drop_torn_tail(fd, os.fstat(fd).st_size)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise NanechoError(f"cannot append: {exc.strerror or exc}", path) from exc


def _drop_torn_tail(fd: int, size: int) -> int:
    """Cut an unterminated last line that is not a JSON document; returns the size to append at."""
    if size == 0:
        return 0
    start = max(0, size - HASH_CHUNK)
    tail = os.pread(fd, size - start, start)
    if tail.endswith(b"\n"):
        return size
    cut = tail.rfind(b"\n")
    if cut < 0 and start > 0:
        return size  # a last line longer than a chunk: leave it to the reader to judge
    fragment = tail[cut + 1 :]
    try:
        json.loads(fragment.decode("utf-8"))
    except ValueError:
        os.ftruncate(fd, start + cut + 1)
        return start + cut + 1
    os.write(fd, b"\n")  # a complete record that only lacks its newline (edited by hand): keep it
    return size + 1


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content, streamed."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise NanechoError("file not found", path) from exc
    except IsADirectoryError as exc:
        raise NanechoError("is a directory, expected a file", path) from exc
    except OSError as exc:
        raise NanechoError(f"cannot read: {exc.strerror or exc}", path) from exc
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_join(base: str | os.PathLike[str], relative: str, *, what: str = "path") -> Path:
    """Join `relative` under `base`, refusing absolute paths, `..` escapes and symlinks out of base."""
    base_path = Path(base)
    if any(
        ord(c) < 0x20 for c in relative
    ):  # NUL would crash the OS calls below; the rest is never a real name
        raise NanechoError(f"{what} {relative!r} contains control characters")
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith(("/", "\\")):
        raise NanechoError(f"{what} must be relative to {base_path}, got absolute {relative!r}")
    if any(part == ".." for part in rel.parts):
        raise NanechoError(f"{what} {relative!r} escapes {base_path} (contains '..')")
    joined = base_path / rel
    real_base = resolved(base_path)
    real = resolved(joined)
    if real != real_base and real_base not in real.parents:
        raise NanechoError(f"{what} {relative!r} resolves outside {base_path} (symlink?)")
    return joined


def resolved(path: str | os.PathLike[str]) -> Path:
    """The absolute path with symlinks resolved; a symlink loop is a user error naming the path."""
    try:
        return Path(path).resolve()
    except RuntimeError as exc:  # how Python 3.11 and 3.12 report a loop
        raise NanechoError("symlink loop", path) from exc
    except OSError as exc:  # 3.13+: ELOOP
        message = "symlink loop" if exc.errno == errno.ELOOP else f"cannot resolve: {exc.strerror or exc}"
        raise NanechoError(message, path) from exc


def check_inside(path: Path, root: Path, what: str) -> None:
    """Refuse a path (absolute, with `..`, or through a symlink) that resolves outside `root`."""
    if not resolved(path).is_relative_to(resolved(root)):
        raise NanechoError(f"{what} must be inside the repository root", path)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """An input file's bytes; a pipe is read to its end, a character or block device is refused
    (/dev/zero never ends). Other failures stay OSError, for the caller to word."""
    refuse_device(path)
    return Path(path).read_bytes()


def refuse_device(path: str | os.PathLike[str]) -> None:
    """A character or block device is no input (/dev/zero never ends); checked before opening it,
    since opening some devices acts (a watchdog starts counting down). A missing path raises OSError."""
    mode = os.stat(path).st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise NanechoError("is a device, not a file", path)


def read_text(path: str | os.PathLike[str], *, kind: str = "file") -> str:
    """A UTF-8 file's text, byte for byte (no newline translation); missing, a directory, a device,
    unreadable or not UTF-8 is a user error naming the file."""
    try:
        return read_bytes(path).decode("utf-8")
    except FileNotFoundError as exc:
        raise NanechoError("file not found", path) from exc
    except IsADirectoryError as exc:
        raise NanechoError(f"is a directory, expected a {kind}", path) from exc
    except UnicodeDecodeError as exc:
        raise NanechoError("not UTF-8 text", path) from exc
    except OSError as exc:
        raise NanechoError(f"cannot read: {exc.strerror or exc}", path) from exc


def is_utf8(text: str) -> bool:
    """False for a str holding lone surrogates: bytes that were not UTF-8 (argv, file names)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; missing, unreadable or malformed files are user errors naming the file."""
    return parse_json(read_text(path, kind="JSON file"), path)


def is_blank(line: str | bytes) -> bool:
    """A JSON Lines line holding only JSON whitespace (space, tab, CR), so nothing to read.

    Not str.strip(): Python counts \\x1c-\\x1f and U+0085 as whitespace, JSON does not, and
    such a line must be refused as invalid JSON rather than skipped as empty.
    """
    return not (line.strip(b" \t\r") if isinstance(line, bytes) else line.strip(" \t\r"))


def parse_json(text: str, path: str | os.PathLike[str] | None = None) -> Any:
    try:
        return json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_float_sized_int
        )
    except json.JSONDecodeError as exc:
        raise NanechoError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", path
        ) from exc
    except ValueError as exc:
        raise NanechoError(f"malformed JSON: {exc}", path) from exc
    except RecursionError as exc:
        raise NanechoError("malformed JSON: nested too deeply", path) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _float_sized_int(text: str) -> int:
    # A 400-digit integer is valid JSON, but every reader compares metrics as floats.
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise ValueError(f"number {text[:20]}… is out of range")
    return value


def _finite_float(text: str) -> float:
    # 1e999 is valid JSON syntax but parses to infinity, which no document may hold and
    # dumps_canonical (allow_nan=False) could never write back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value

"""Specs for paths that are not regular files: devices, pipes, links to open descriptors, symlink loops.

Device nodes are reached only through symlinks in tmp_path: an atomic write that wrongly renames over
the target then replaces the link, never the device itself (tests run as root too).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanecho_core.errors import NanechoError
from nanecho_core.fsio import (
    atomic_write_bytes,
    check_inside,
    file_holds,
    read_json,
    read_text,
    resolved,
    safe_join,
)


def char_device(path: str) -> Path:
    if not (os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode)):
        pytest.skip(f"needs the character device {path}")
    return Path(path)


def link_to(tmp_path: Path, target: str | Path, name: str = "link") -> Path:
    link = tmp_path / name
    link.symlink_to(target)
    return link


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def feed(fifo: Path, data: bytes) -> threading.Thread:
    """A writer thread for `fifo`, as bash's <(...) would be; join it after reading."""
    thread = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)
    thread.start()
    return thread


def test_atomic_write_to_a_fifo_writes_through_it_and_keeps_the_fifo(fifo: Path) -> None:
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there, so the writer never blocks
    try:
        atomic_write_bytes(fifo, b'{"v": 1}\n')
        assert os.read(reader, 1 << 16) == b'{"v": 1}\n'
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(fifo.parent) == ["pipe"]  # no temp file left beside it


def test_atomic_write_through_a_link_to_dev_null_keeps_the_link(tmp_path: Path) -> None:
    link = link_to(tmp_path, char_device("/dev/null"))
    atomic_write_bytes(link, b"discarded\n")
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)
    assert os.listdir(tmp_path) == ["link"]


def test_atomic_write_to_a_full_device_is_a_user_error_naming_it(tmp_path: Path) -> None:
    link = link_to(tmp_path, char_device("/dev/full"))
    with pytest.raises(NanechoError) as caught:
        atomic_write_bytes(link, b"lost\n")
    assert str(caught.value) == f"Error: {link}: cannot write: No space left on device"
    assert link.is_symlink()


@pytest.fixture
def open_file(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    behind = tmp_path / "behind.txt"
    fd = os.open(behind, os.O_WRONLY | os.O_CREAT, 0o644)
    yield fd, behind
    os.close(fd)


def test_atomic_write_to_a_link_to_an_open_descriptor_writes_the_file_behind_it(
    tmp_path: Path, open_file: tuple[int, Path]
) -> None:
    # /dev/stdout -> /proc/self/fd/1 under `> out.json`: renaming over it replaced /dev/stdout itself.
    fd, behind = open_file
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    link = link_to(tmp_path, f"/proc/self/fd/{fd}", name="stdout")
    atomic_write_bytes(link, b"through\n")
    assert link.is_symlink()
    assert behind.read_bytes() == b"through\n"


def test_a_link_to_a_regular_file_is_still_replaced_atomically(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("old\n")
    link = link_to(tmp_path, "real.json")
    atomic_write_bytes(link, b"new\n")
    assert not link.is_symlink() and link.read_bytes() == b"new\n"
    assert (tmp_path / "real.json").read_text() == "old\n"


def test_reading_a_device_is_refused_before_reading_anything() -> None:
    null = char_device("/dev/null")  # /dev/zero would never end without the check
    for read in (read_text, read_json):
        with pytest.raises(NanechoError) as caught:
            read(null)
        assert str(caught.value) == "Error: /dev/null: is a device, not a file"


def test_a_fifo_is_read_to_its_end_like_process_substitution(fifo: Path) -> None:
    writer = feed(fifo, b'{"from": "a pipe"}\n')
    assert read_json(fifo) == {"from": "a pipe"}
    writer.join(5)


def test_comparing_with_the_existing_file_reads_regular_files_only(tmp_path: Path) -> None:
    # summarize --html /dev/full read the endless zeros to see whether the page had changed.
    (tmp_path / "same.txt").write_bytes(b"abc")
    assert file_holds(tmp_path / "same.txt", b"abc")
    assert not file_holds(tmp_path / "same.txt", b"abd")
    assert not file_holds(tmp_path / "absent.txt", b"")
    assert not file_holds(link_to(tmp_path, char_device("/dev/null")), b"")  # reads as b"", unread here


def test_a_symlink_loop_is_a_user_error_naming_the_path(tmp_path: Path) -> None:
    loop = link_to(tmp_path, "loop", name="loop")
    for call in (
        lambda: resolved(loop),
        lambda: safe_join(tmp_path, "loop/x.pt"),
        lambda: check_inside(loop, tmp_path, "README"),
    ):
        with pytest.raises(NanechoError) as caught:
            call()
        assert caught.value.message == "symlink loop"
        assert caught.value.path is not None and caught.value.path.startswith(str(loop))

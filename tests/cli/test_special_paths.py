"""Devices, pipes and symlink loops given to the tools: the expected write or one `Error:` line and
exit 2, never a traceback, an endless read, or a device node replaced by a regular file.

Devices are reached through symlinks in tmp_path, so a regression renames over the link, never over
/dev/null or /dev/full themselves (the suite also runs as root).
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanecho_tools import ckpt_select, meta_update, summarize
from tests.cli.test_meta_update import write_step
from tests.reliability.harness import tree_digest
from tests.unit.test_selection import RUN, chain, seed_run

runner = CliRunner()
TOOLS = {"ckpt-select": ckpt_select.app, "meta-update": meta_update.app, "summarize": summarize.app}
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "training_summary_history.jsonl"


def invoke(tool: str, *args: str) -> Any:
    return runner.invoke(TOOLS[tool], list(args), catch_exceptions=False)


def char_device(path: str) -> str:
    if not (os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode)):
        pytest.skip(f"needs the character device {path}")
    return path


def link_to(tmp_path: Path, target: str, name: str) -> Path:
    link = tmp_path / name
    link.symlink_to(target)
    return link


OUTPUTS = {
    "ckpt-select": lambda out: ["--run", RUN, "--out", out],
    "summarize": lambda out: ["--run", RUN, "--no-write", "--html", out],
}


@pytest.mark.parametrize("tool", list(OUTPUTS))
def test_an_output_that_is_dev_null_is_written_through_not_replaced(tmp_path: Path, tool: str) -> None:
    seed_run(tmp_path, chain(2.0, 1.5))
    null = link_to(tmp_path, char_device("/dev/null"), "null")
    result = invoke(tool, *OUTPUTS[tool](str(null)), "--root", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert null.is_symlink() and stat.S_ISCHR(os.stat(null).st_mode)


def test_an_output_on_a_full_device_exits_2_naming_it(tmp_path: Path) -> None:
    # summarize's --html is checked in a subprocess below: a regression there reads /dev/full forever.
    seed_run(tmp_path, chain(2.0, 1.5))
    full = link_to(tmp_path, char_device("/dev/full"), "full")
    before = tree_digest(tmp_path)
    result = invoke("ckpt-select", *OUTPUTS["ckpt-select"](str(full)), "--root", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {full}: cannot write: No space left on device\n"
    assert full.is_symlink() and tree_digest(tmp_path) == before


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_summarize_never_reads_a_device_html_target_to_compare(tmp_path: Path, tool_bin: Path) -> None:
    # It read /dev/full (endless zeros) to see whether the dashboard had changed: 24 GB, then killed.
    seed_run(tmp_path, chain(2.0, 1.5))
    full = link_to(tmp_path, char_device("/dev/full"), "full")
    args = ["--root", str(tmp_path), "--run", RUN, "--no-write", "--html", str(full)]
    proc = subprocess.run(
        [str(tool_bin / "summarize"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert (proc.returncode, proc.stderr) == (2, f"Error: {full}: cannot write: No space left on device\n")


INPUTS = {
    "ckpt-select --config": ["ckpt-select", "--run", RUN, "--out", "{out}", "--config", "{bad}"],
    "meta-update record": ["meta-update", "record", "{bad}", "--run", RUN],
    "meta-update import-legacy": ["meta-update", "import-legacy", "{bad}", "--run", RUN],
    "summarize --legacy-history": ["summarize", "--legacy-history", "{bad}"],
}


@pytest.mark.parametrize("command", list(INPUTS))
def test_an_input_that_is_a_device_is_refused_unread(tmp_path: Path, command: str) -> None:
    # /dev/zero never ends (reading it grew to 24 GB); /dev/null shows the refusal at no risk.
    seed_run(tmp_path, chain(2.0, 1.5))
    null = char_device("/dev/null")
    before = tree_digest(tmp_path)
    tool, *args = (a.format(out=tmp_path / "s.json", bad=null) for a in INPUTS[command])
    result = invoke(tool, *args, "--root", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == "Error: /dev/null: is a device, not a file\n"
    assert tree_digest(tmp_path) == before


def test_an_input_that_is_a_pipe_is_read_like_a_file(tmp_path: Path) -> None:
    # summarize --legacy-history <(cat history.jsonl); the page title names the file, so same names
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "history").write_bytes(FIXTURE.read_bytes())
    pipe = tmp_path / "a" / "history"
    os.mkfifo(pipe)
    writer = threading.Thread(target=pipe.write_bytes, args=(FIXTURE.read_bytes(),), daemon=True)
    writer.start()
    piped = invoke("summarize", "--legacy-history", str(pipe), "--format", "md")
    writer.join(5)
    assert piped.exit_code == 0, piped.stderr
    regular = invoke("summarize", "--legacy-history", str(tmp_path / "b" / "history"), "--format", "md")
    assert piped.stdout == regular.stdout


LOOPED_RUN = {
    "ckpt-select": ["ckpt-select", "--run", "loop", "--out", "{out}"],
    "meta-update list": ["meta-update", "list", "--run", "loop"],
    "summarize": ["summarize", "--run", "loop"],
}


@pytest.mark.parametrize("command", list(LOOPED_RUN))
def test_a_run_dir_that_is_a_symlink_loop_exits_2_naming_it(tmp_path: Path, command: str) -> None:
    loop = link_to(tmp_path, "loop", "loop")
    tool, *args = (a.format(out=tmp_path / "s.json") for a in LOOPED_RUN[command])
    result = invoke(tool, *args, "--root", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {loop}: symlink loop\n"
    assert [p.name for p in tmp_path.iterdir()] == ["loop"]


RUN_COMMANDS = {
    "ckpt-select": ["ckpt-select", "--run", RUN, "--out", "{out}"],
    "meta-update mark-missing": ["meta-update", "mark-missing", "--run", RUN],
    "meta-update prune": ["meta-update", "prune", "--keep-best", "1", "--keep-last", "0", "--run", RUN],
    "meta-update prune --dry-run": ["meta-update", "prune", "--dry-run", "--keep-best", "1", "--run", RUN],
}


@pytest.mark.parametrize("command", list(RUN_COMMANDS))
def test_a_checkpoints_dir_that_is_a_symlink_loop_exits_2_and_changes_nothing(
    tmp_path: Path, command: str
) -> None:
    paths = seed_run(tmp_path, chain(2.0, 1.5, 1.4))
    for item in paths.checkpoints_dir.iterdir():
        item.unlink()
    paths.checkpoints_dir.rmdir()
    paths.checkpoints_dir.symlink_to("checkpoints")
    before = tree_digest(tmp_path)
    tool, *args = (a.format(out=tmp_path / "s.json") for a in RUN_COMMANDS[command])
    result = invoke(tool, *args, "--root", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {paths.checkpoints_dir}/ckpt-")
    assert result.stderr.endswith(".pt: symlink loop\n") and result.stderr.count("\n") == 1
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("command", ["validate", "record"])
def test_a_sessions_log_that_is_a_symlink_loop_exits_2_naming_it(tmp_path: Path, command: str) -> None:
    paths = seed_run(tmp_path, chain(2.0))
    paths.sessions.symlink_to(paths.sessions.name)
    step = write_step(tmp_path, chain(2.0, 1.5))
    before = tree_digest(tmp_path)
    args = ["validate"] if command == "validate" else ["record", str(step)]
    result = invoke("meta-update", *args, "--root", str(tmp_path), "--run", RUN)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert f"{paths.sessions}: cannot read: Too many levels of symbolic links\n" in result.stderr
    assert tree_digest(tmp_path) == before


KEPT_AS_DEVICE = {
    "metadata.json, ckpt-select": ("metadata", ["ckpt-select", "--run", RUN, "--out", "{out}"]),
    "metadata.json, meta-update list": ("metadata", ["meta-update", "list", "--run", RUN]),
    "sessions.jsonl, summarize": ("sessions", ["summarize", "--run", RUN, "--no-write"]),
    "sessions.jsonl, meta-update validate": ("sessions", ["meta-update", "validate", "--run", RUN]),
}


@pytest.mark.parametrize("case", list(KEPT_AS_DEVICE))
def test_a_run_file_that_is_a_device_is_refused_unread(tmp_path: Path, case: str) -> None:
    # A committed symlink metadata.json -> /dev/zero would be read forever; /dev/null shows the
    # refusal at no risk.
    paths = seed_run(tmp_path, chain(2.0, 1.5))
    which, command = KEPT_AS_DEVICE[case]
    kept = paths.metadata if which == "metadata" else paths.sessions
    kept.unlink(missing_ok=True)
    kept.symlink_to(char_device("/dev/null"))
    before = tree_digest(tmp_path)
    tool, *args = (a.format(out=tmp_path / "s.json") for a in command)
    result = invoke(tool, *args, "--root", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {kept}: is a device, not a file\n"
    assert tree_digest(tmp_path) == before


def test_a_sidecar_that_is_a_device_is_a_rejected_candidate(tmp_path: Path) -> None:
    paths = seed_run(tmp_path, chain(2.0, 1.5), files=False)
    paths.checkpoints_dir.mkdir(parents=True)
    sidecar = paths.checkpoints_dir / "ckpt-20261124T000000Z-bbbbbb-00000010.json"
    sidecar.symlink_to(char_device("/dev/null"))
    out = tmp_path / "s.json"
    result = invoke("ckpt-select", "--run", RUN, "--out", str(out), "--allow-fresh", "--root", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    rejected = {r["id"]: r["reason"] for r in json.loads(out.read_text())["rejected"]}
    assert (
        rejected[sidecar.stem]
        == f"unreadable sidecar {sidecar.name}: Error: {sidecar}: is a device, not a file"
    )


@pytest.mark.parametrize("redirect", ["w", "a"])
def test_out_dev_stdout_writes_at_the_shells_offset(tmp_path: Path, tool_bin: Path, redirect: str) -> None:
    # Reopening /proc/self/fd/1 truncated `> log` and wrote the summary line over the JSON, and
    # emptied `>> log`; writing through a duplicate of descriptor 1 keeps the shell's offset.
    if not os.path.islink("/dev/stdout"):
        pytest.skip("needs /dev/stdout")
    seed_run(tmp_path, chain(2.0, 1.5))
    log = tmp_path / "log.txt"
    log.write_text("earlier line\n")
    with open(log, redirect) as handle:  # noqa: PTH123 - the shell's `>` / `>>`
        proc = subprocess.run(
            [str(tool_bin / "ckpt-select"), "--run", RUN, "--out", "/dev/stdout"],
            cwd=tmp_path,
            stdout=handle,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    kept = "earlier line\n" if redirect == "a" else ""
    assert text.startswith(kept)
    document, _, summary = text[len(kept) :].partition("\n}\n")  # the top level closes at column 0
    assert json.loads(document + "\n}")["chosen"]["id"] == chain(2.0, 1.5)[1]["id"]
    assert summary.splitlines()[-1] == "1 candidate(s) rejected; details in /dev/stdout"

"""A bad command line is a user error like any other: one `Error: …` line, exit 2, in every tool.

click's own report is five lines (usage, a hint, a boxed message); tools/_cli.py reduces it to
click's message and where help is. Also here: path arguments that are not UTF-8, and a stdout
that cannot be written (a full disk under `> file`).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanecho_core.fsio import atomic_write_json
from nanecho_core.store import empty_index
from nanecho_tools import ckpt_select, meta_update, progress_commit, summarize, train_step, umbrella

runner = CliRunner()
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("app", "prog", "args", "error"),
    [
        (
            ckpt_select.app,
            "ckpt-select",
            ["--bogus"],
            "No such option: --bogus (Possible options: --out) (see ckpt-select --help)",
        ),
        (
            ckpt_select.app,
            "ckpt-select",
            ["--out", "s.json"],
            "Missing option '--run'. (see ckpt-select --help)",
        ),
        (
            train_step.app,
            "train-step",
            ["--iters", "abc"],
            "Invalid value for '--iters': 'abc' is not a valid int. (see train-step --help)",
        ),
        (meta_update.app, "meta-update", ["nosuch"], "No such command 'nosuch'. (see meta-update --help)"),
        (
            meta_update.app,
            "meta-update",
            ["set", "x", "iteration", "-1"],
            "No such option: -1 (see meta-update set --help)",
        ),
        (
            progress_commit.app,
            "progress-commit",
            ["--retries"],
            "Option '--retries' requires an argument. (see progress-commit --help)",
        ),
        (
            summarize.app,
            "summarize",
            ["--format", "pdf"],
            "--format must be one of json, md, html, term, got 'pdf'",
        ),
        (
            umbrella.app,
            "nanecho",
            ["meta-update", "list", "--bogus"],
            "No such option: --bogus (see nanecho meta-update list --help)",
        ),
    ],
)
def test_a_bad_command_line_is_one_error_line_and_exit_2(
    app: Any, prog: str, args: list[str], error: str
) -> None:
    result = runner.invoke(app, args, prog_name=prog)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {error}\n"
    assert result.stdout == ""


def test_help_and_a_bare_group_still_show_help() -> None:
    shown = runner.invoke(ckpt_select.app, ["--help"], prog_name="ckpt-select")
    assert shown.exit_code == 0 and "Usage: ckpt-select [OPTIONS]" in shown.stdout
    bare = runner.invoke(meta_update.app, [], prog_name="meta-update")
    assert (
        bare.exit_code == 2 and "Usage: meta-update [OPTIONS] COMMAND [ARGS]..." in bare.stdout + bare.stderr
    )


def test_a_console_script_reports_a_bad_command_line_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(BIN / "train-step"), "--run", "r", "--iters", "many"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "Error: Invalid value for '--iters': 'many' is not a valid int. (see train-step --help)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_path_argument_that_is_not_utf8_is_refused_before_any_work(tmp_path: Path) -> None:
    # Before, summarize wrote its outputs, then crashed on the name (UnicodeEncodeError).
    bad = os.fsdecode(b"dash\xff.html")
    result = runner.invoke(summarize.app, ["--root", str(tmp_path), "--html", bad], prog_name="summarize")
    assert result.exit_code == 2
    assert result.stderr == "Error: HTML is not valid UTF-8 text\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode),
    reason="needs /dev/full",
)
def test_a_full_disk_under_stdout_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:  # noqa: PTH123 - a device, written through the shell's redirection
        shown = subprocess.run(
            [str(BIN / "meta-update"), "--help"], cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True
        )
        index = tmp_path / "r" / "cache" / "metadata.json"
        index.parent.mkdir(parents=True)
        atomic_write_json(index, empty_index("r"))
        proc = subprocess.run(
            [str(BIN / "meta-update"), "show", "--run", "r"],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    for done in (shown, proc):
        assert done.returncode == 2, done.stderr
        assert done.stderr == "Error: cannot write to standard output: No space left on device\n"


def test_ctrl_c_while_a_tool_is_imported_is_aborted_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    from nanecho_tools import _entry

    def interrupted(name: str) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    with pytest.raises(SystemExit) as leaving:
        _entry.summarize()
    assert leaving.value.code == 130
    assert capsys.readouterr().err == "Aborted.\n"


def test_every_console_script_goes_through_the_guarded_entry_point() -> None:
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    assert sorted(scripts) == [
        "ckpt-select",
        "meta-update",
        "nanecho",
        "progress-commit",
        "summarize",
        "train-step",
    ]
    assert all(target.startswith("nanecho_tools._entry:") for target in scripts.values())
    assert all((BIN / name).exists() for name in scripts)

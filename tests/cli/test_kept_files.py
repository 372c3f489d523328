"""An output option never overwrites a file a run keeps (its index, session log, summary, anything
under cache/, PROGRESS.md): one `Error:` line, exit 2, nothing changed. Before, `--out` or `--html`
pointed at metadata.json replaced the index with the tool's result, and the next tool failed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanecho_core.fsio import atomic_write_text
from nanecho_tools import ckpt_select, summarize
from tests.reliability.harness import tree_digest
from tests.unit.test_selection import RUN, chain, seed_run

runner = CliRunner()
KEPT = [
    f"{RUN}/cache/metadata.json",
    f"{RUN}/sessions.jsonl",
    f"{RUN}/training_summary.json",
    f"{RUN}/cache/checkpoints/result.json",
    ".training-progress/PROGRESS.md",
]


def seeded(tmp_path: Path) -> Path:
    paths = seed_run(tmp_path, chain(2.0, 1.5))
    atomic_write_text(paths.sessions, "")
    atomic_write_text(paths.summary, "{}\n")
    atomic_write_text(tmp_path / ".training-progress" / "PROGRESS.md", "# progress\n")
    return tmp_path


@pytest.mark.parametrize("kept", KEPT)
@pytest.mark.parametrize(
    ("app", "option"),
    [(ckpt_select.app, "--out"), (summarize.app, "--html")],
    ids=["ckpt-select", "summarize"],
)
def test_an_output_naming_a_kept_file_is_refused_and_changes_nothing(
    tmp_path: Path, app: Any, option: str, kept: str
) -> None:
    root = seeded(tmp_path)
    before = tree_digest(root)
    target = root / kept
    args = ["--root", str(root), "--run", RUN, option, str(target)]
    result = runner.invoke(app, args + (["--no-write"] if app is summarize.app else []))
    assert result.exit_code == 2, result.stderr
    assert (
        result.stderr
        == f"Error: {target}: {option} names a file that run nanecho-cached-ci keeps; write it elsewhere\n"
    )
    assert tree_digest(root) == before


def test_a_relative_or_symlinked_path_to_a_kept_file_is_refused_too(tmp_path: Path, tool_bin: Path) -> None:
    root = seeded(tmp_path)
    (root / "index.json").symlink_to(root / RUN / "cache" / "metadata.json")
    before = tree_digest(root)
    for out in ("index.json", f"./{RUN}/../{Path(RUN).name}/cache/metadata.json"):
        proc = subprocess.run(
            [str(tool_bin / "ckpt-select"), "--run", RUN, "--out", out],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.endswith(
            ": --out names a file that run nanecho-cached-ci keeps; write it elsewhere\n"
        )
        assert len(proc.stderr.splitlines()) == 1
    assert tree_digest(root) == before


def test_an_ordinary_output_next_to_the_kept_files_is_still_written(tmp_path: Path) -> None:
    root = seeded(tmp_path)
    out = root / RUN / "selection.json"
    result = runner.invoke(ckpt_select.app, ["--root", str(root), "--run", RUN, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.is_file()

"""`nanecho` mounts the five tools: each subcommand is the same command as the tool's own script."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nanecho_tools.umbrella import app

runner = CliRunner()


def test_umbrella_lists_the_five_tools() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for name in ("ckpt-select", "train-step", "meta-update", "progress-commit", "summarize"):
        assert name in result.output


def test_umbrella_runs_a_single_command_tool_without_repeating_its_name(tmp_path: Path) -> None:
    out = tmp_path / "selection.json"
    result = runner.invoke(app, ["ckpt-select", "--root", str(tmp_path), "--run", "r", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert '"source": "fresh"' in out.read_text()


def test_umbrella_maps_user_errors_to_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["meta-update", "show", "ckpt-x-00000001", "--root", str(tmp_path), "--run", "../x"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1


def test_umbrella_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == "nanecho 0.1.0"

"""The summarize CLI, in-process (CliRunner) and as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanecho_core.fsio import atomic_write_json
from nanecho_tools.summarize import app
from tests.summary_support import CI, session, three_session_run, write_run

runner = CliRunner()
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "training_summary_history.jsonl"
SHORT = (
    "nanecho-cached-ci: 3 sessions, iteration 100, 230k tokens, best val loss 2, resets 1, regressions 0, "
    "trend worsening\n"
)
README = (
    "# Demo\n\nKeep me.\n\n<!-- nanecho:progress:start -->\nstale\n<!-- nanecho:progress:end -->\n\nAnd me.\n"
)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_writes_summary_and_progress_and_prints_one_line_per_run(tmp_path: Path) -> None:
    paths = three_session_run(tmp_path)
    result = runner.invoke(app, ["--root", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == SHORT
    doc = json.loads(paths.summary.read_text())
    assert list(doc["runs"]) == ["nanecho-cached-ci"] and doc["schema_version"] == 1
    assert (tmp_path / ".training-progress/PROGRESS.md").read_text().startswith("# Training progress\n")


def test_json_prints_the_summary_document_the_file_holds(tmp_path: Path) -> None:
    paths = three_session_run(tmp_path)
    for args in (["--json"], ["--format", "json"]):
        result = runner.invoke(app, ["--root", str(tmp_path), *args])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == paths.summary.read_text()


def test_format_md_and_term_print_their_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # pytest-xdist workers set COLUMNS=80
    three_session_run(tmp_path)
    md = runner.invoke(app, ["--root", str(tmp_path), "--format", "md"])
    assert md.stdout == (tmp_path / ".training-progress/PROGRESS.md").read_text()
    term = runner.invoke(app, ["--root", str(tmp_path), "--format", "term"])
    assert term.exit_code == 0, term.stderr
    assert "NanEcho runs" in term.stdout and "reset" in term.stdout
    # Not a terminal (a CI log): whole cells at the tables' natural width, not cut to 80 columns.
    assert "…" not in term.stdout
    runs_row = next(line for line in term.stdout.splitlines() if line.startswith("│ nanecho-cached-ci "))
    assert runs_row.split("│")[1:3] == [" nanecho-cached-ci ", " ci     "]
    assert max(map(len, term.stdout.splitlines())) > 80


def test_format_term_honours_columns_outside_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_session_run(tmp_path)
    monkeypatch.setenv("COLUMNS", "60")
    term = runner.invoke(app, ["--root", str(tmp_path), "--format", "term"])
    assert term.exit_code == 0, term.stderr
    assert max(map(len, term.stdout.splitlines())) == 60 and "…" in term.stdout


def test_format_html_prints_the_dashboard_and_html_path_writes_it(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    printed = runner.invoke(app, ["--root", str(tmp_path), "--format", "html"])
    assert printed.stdout.startswith("<!DOCTYPE html>")
    target = tmp_path / "out" / "dashboard.html"
    written = runner.invoke(app, ["--root", str(tmp_path), "--html", str(target)])
    assert written.exit_code == 0 and written.stdout == SHORT
    assert target.read_text() == printed.stdout


@pytest.mark.parametrize("where", ["../outside.md", "ABSOLUTE"])
def test_a_readme_outside_the_root_is_refused_and_left_alone(tmp_path: Path, where: str) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    three_session_run(root)
    outside = tmp_path / "outside.md"
    outside.write_text(README)
    arg = str(outside) if where == "ABSOLUTE" else where
    before = snapshot_tree(tmp_path)
    result = runner.invoke(app, ["--root", str(root), "--readme", arg])
    shown = outside if where == "ABSOLUTE" else root / where
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {shown}: README must be inside the repository root\n",
    )
    assert snapshot_tree(tmp_path) == before


def snapshot_tree(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_readme_block_is_updated_and_nothing_else_in_the_readme_changes(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    (tmp_path / "README.md").write_text(README)
    result = runner.invoke(app, ["--root", str(tmp_path), "--readme", "README.md"])
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "README.md").read_text()
    head, rest = text.split("<!-- nanecho:progress:start -->\n")
    block, tail = rest.split("<!-- nanecho:progress:end -->")
    assert head == "# Demo\n\nKeep me.\n\n" and tail == "\n\nAnd me.\n"
    assert block.startswith("### Training progress\n\n| run | preset |")
    assert "| nanecho-cached-ci | ci | 3 | 100 |" in block
    assert block.endswith(
        "Charts, sessions and resets: [.training-progress/PROGRESS.md](.training-progress/PROGRESS.md).\n"
    )


def test_readme_without_markers_exits_2_naming_it_and_writes_nothing(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    (tmp_path / "README.md").write_text("# no markers here\n")
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["--root", str(tmp_path), "--readme", "README.md"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {tmp_path / 'README.md'}: expected one <!-- nanecho:progress:start --> and one "
        "<!-- nanecho:progress:end --> marker, found 0 and 0\n"
    )
    assert result.stdout == ""
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda p: p.sessions.write_text('{"schema_version": 1}\n{"torn'),
            "sessions.jsonl:1:$: does not match",
        ),
        (
            lambda p: p.sessions.write_text("not json\nnot json either\n"),
            "sessions.jsonl: line 1 is not valid JSON",
        ),
        (
            lambda p: p.metadata.parent.mkdir(parents=True) or p.metadata.write_text("{"),
            "metadata.json: malformed JSON",
        ),
        (lambda p: atomic_write_json(p.metadata, {"schema_version": 2}), "metadata.json:$: does not match"),
    ],
)
def test_malformed_inputs_exit_2_with_one_line_and_nothing_written(
    tmp_path: Path, corrupt, message: str
) -> None:  # type: ignore[no-untyped-def]
    paths = write_run(tmp_path, [])
    paths.sessions.write_text("")
    corrupt(paths)
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["--root", str(tmp_path), "--run", CI, "--html", str(tmp_path / "d.html")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


def test_run_outside_the_root_or_missing_is_refused(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    escape = runner.invoke(app, ["--root", str(tmp_path), "--run", "../elsewhere"])
    assert escape.exit_code == 2 and "escapes" in escape.stderr
    missing = runner.invoke(app, ["--root", str(tmp_path), "--run", ".training-progress/nope"])
    assert missing.exit_code == 2
    assert missing.stderr == f"Error: {tmp_path / '.training-progress/nope'}: run directory not found\n"


def test_unknown_format_exits_2(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    result = runner.invoke(app, ["--root", str(tmp_path), "--format", "pdf"])
    assert result.exit_code == 2
    assert result.stderr == "Error: --format must be one of json, md, html, term, got 'pdf'\n"


def test_step_summary_appends_this_sessions_figures_and_outputs_go_to_github_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = three_session_run(tmp_path)
    step = tmp_path / "step.json"
    atomic_write_json(step, json.loads(paths.sessions.read_text().splitlines()[-1]))
    summary_file, output_file = tmp_path / "summary.md", tmp_path / "output.txt"
    summary_file.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    monkeypatch.setenv("GITHUB_OUTPUT", str(output_file))
    result = runner.invoke(app, ["--root", str(tmp_path), "--step-summary", "--session", str(step)])
    assert result.exit_code == 0, result.stderr
    text = summary_file.read_text()
    assert text.startswith("earlier step\n## NanEcho: nanecho-cached-ci\n")
    assert "### This session\n" in text and "| iterations | 0 → 100 |" in text and "xychart-beta" in text
    assert output_file.read_text() == (
        "runs=nanecho-cached-ci\n"
        f"progress_file={(tmp_path / '.training-progress/PROGRESS.md').as_posix()}\n"
        "resets=1\nregressions=0\ndashboard=\nbest_val_loss=2.0\nbest_checkpoint=\n"
    )


def test_several_runs_are_compared_and_run_selects_one(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    write_run(
        tmp_path,
        [
            session(
                1,
                0,
                50,
                source="fresh",
                start_loss=None,
                end_loss=3.0,
                run="nanecho-cached-full",
                preset="full",
            )
        ],
        run=".training-progress/nanecho-cached-full",
    )
    both = runner.invoke(app, ["--root", str(tmp_path), "--json"])
    assert list(json.loads(both.stdout)["runs"]) == ["nanecho-cached-ci", "nanecho-cached-full"]
    one = runner.invoke(
        app, ["--root", str(tmp_path), "--run", ".training-progress/nanecho-cached-full", "--json"]
    )
    assert list(json.loads(one.stdout)["runs"]) == ["nanecho-cached-full"]


def test_no_write_prints_without_touching_files(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["--root", str(tmp_path), "--no-write", "--format", "md"])
    assert result.exit_code == 0 and result.stdout.startswith("# Training progress")
    assert snapshot(tmp_path) == before


def test_legacy_history_renders_without_touching_runs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--legacy-history", str(FIXTURE), "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["versions"], doc["resets"]) == (243, 9)
    md = runner.invoke(app, ["--legacy-history", str(FIXTURE)])
    assert md.stdout.startswith("# Legacy training history (training_summary_history.jsonl)\n")
    html = runner.invoke(app, ["--legacy-history", str(FIXTURE), "--html", str(tmp_path / "legacy.html")])
    assert html.exit_code == 0 and (tmp_path / "legacy.html").read_text().startswith("<!DOCTYPE html>")


def test_console_script_matches_in_process_and_never_imports_torch(tmp_path: Path, tool_bin: Path) -> None:
    three_session_run(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    proc = subprocess.run(
        [str(tool_bin / "summarize"), "--root", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == runner.invoke(app, ["--root", str(tmp_path), "--json"]).stdout
    bad = subprocess.run(
        [str(tool_bin / "summarize"), "--root", str(tmp_path / "absent")], capture_output=True, text=True
    )
    assert (bad.returncode, bad.stdout) == (2, "")
    assert (
        bad.stderr == f"Error: {tmp_path / 'absent'}: no runs found under .training-progress/ (give --run)\n"
    )
    code = (
        "import sys; from pathlib import Path; from nanecho_core.summary_report import summarize;"
        f"summarize(Path({str(tmp_path)!r}), html=Path({str(tmp_path / 'd.html')!r}), readme=None);"
        "from nanecho_core.history import load_legacy_history;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'jsonschema')))"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout == "[]\n"


def test_step_summary_for_a_session_of_another_run_shows_its_figures_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_session_run(tmp_path)
    other = session(9, 0, 50, source="fresh", start_loss=None, end_loss=3.0, run="nanecho-cached-full")
    step = tmp_path / "step.json"
    atomic_write_json(step, other)
    summary_file = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    result = runner.invoke(app, ["--root", str(tmp_path), "--step-summary", "--session", str(step)])
    assert result.exit_code == 0, result.stderr
    text = summary_file.read_text()
    assert text.startswith("## NanEcho: nanecho-cached-full\n\n### This session\n")
    assert "| iterations | 0 → 50 |" in text and "xychart" not in text


def test_a_malformed_step_json_exits_2_before_anything_is_written(tmp_path: Path) -> None:
    three_session_run(tmp_path)
    step = tmp_path / "step.json"
    step.write_text('{"schema_version": 1, "run": "nanecho-cached-ci"}')
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["--root", str(tmp_path), "--step-summary", "--session", str(step)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {step}:$: does not match the session schema")
    assert snapshot(tmp_path) == before


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "a-directory").mkdir()
    return tmp_path / "a-directory"


def _dangling(tmp_path: Path) -> Path:
    (tmp_path / "dangling").symlink_to(tmp_path / "missing" / "out")
    return tmp_path / "dangling"


def _too_long(tmp_path: Path) -> Path:
    return tmp_path / ("x" * 300)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (_directory, "is not a file that can be appended to"),
        (_dangling, "cannot be appended to: No such file or directory"),
        (_too_long, "cannot be appended to: File name too long"),
    ],
    ids=["directory", "dangling-link", "name-too-long"],
)
@pytest.mark.parametrize("variable", ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"])
def test_an_unusable_github_file_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, make: Any, error: str
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    three_session_run(root)
    target = make(tmp_path)
    monkeypatch.setenv(variable, str(target))
    before = snapshot_tree(tmp_path)
    result = runner.invoke(app, ["--root", str(root), "--step-summary"])
    assert (result.exit_code, result.stderr) == (2, f"Error: {target}: ${variable} {error}\n")
    assert snapshot_tree(tmp_path) == before


def test_a_missing_github_output_is_not_created_by_the_early_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "github-output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(target))
    result = runner.invoke(app, ["--root", str(tmp_path), "--run", "nope"])
    assert result.exit_code == 2
    assert not target.exists()

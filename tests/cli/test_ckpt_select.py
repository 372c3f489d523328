"""ckpt-select as users and the workflow call it: files written, $GITHUB_OUTPUT, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanecho_tools.ckpt_select import app
from tests.factories import make_entry
from tests.unit.test_selection import RUN, chain, seed_run

runner = CliRunner()


def invoke(root: Path, *args: str) -> object:
    return runner.invoke(app, ["--root", str(root), "--run", RUN, *args], catch_exceptions=False)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_writes_selection_and_github_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = chain(2.0, 1.5)
    seed_run(tmp_path, [a, b])
    outputs = tmp_path / "gh_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    out = tmp_path / "selection.json"
    result = invoke(tmp_path, "--out", str(out))
    assert result.exit_code == 0, result.output
    resume = tmp_path / RUN / b["file"]
    assert result.stdout == (
        f"cache: {b['id']} — best verified val_loss 1.5 at iteration 200 (cache tier, from index)\n"
        f"1 candidate(s) rejected; details in {out}\n"
    )
    doc = json.loads(out.read_text())
    assert doc["chosen"] == b and doc["resume_path"] == str(resume)
    assert outputs.read_text() == (
        f"resume_path={resume}\nsource=cache\niteration=200\ncheckpoint_id={b['id']}\n"
    )


def test_json_output_is_the_selection_document(tmp_path: Path) -> None:
    seed_run(tmp_path, chain(2.0))
    out = tmp_path / "selection.json"
    result = invoke(tmp_path, "--out", str(out), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(out.read_text())


def test_fresh_start_outputs_empty_resume_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = tmp_path / "gh_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    result = invoke(tmp_path, "--out", str(tmp_path / "s.json"))
    assert result.exit_code == 0
    assert result.stdout.startswith("fresh — fresh start: index empty, no artifact directory given\n")
    assert outputs.read_text() == "resume_path=\nsource=fresh\niteration=0\ncheckpoint_id=\n"


def test_regression_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.2)
    paths = seed_run(tmp_path, [a, b])
    (paths.dir / b["file"]).unlink()
    before = snapshot(tmp_path)
    result = invoke(tmp_path, "--out", str(tmp_path / "selection.json"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: refusing to resume: the index knows {b['id']}")
    assert snapshot(tmp_path) == before
    allowed = invoke(tmp_path, "--out", str(tmp_path / "selection.json"), "--allow-fresh")
    assert allowed.exit_code == 0
    assert "regression accepted (--allow-fresh)" in allowed.stdout


def test_other_preset_architecture_rejects_ci_checkpoints(tmp_path: Path) -> None:
    seed_run(tmp_path, chain(2.0))
    result = invoke(tmp_path, "--out", str(tmp_path / "s.json"), "--preset", "full", "--allow-fresh")
    assert result.exit_code == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["source"] == "fresh" and doc["regression"] is False
    assert doc["rejected"][0]["reason"].endswith("(architecture differs)")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "{not json",
            ": malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        ('{"schema_version": 2}', ":$: does not match the metadata schema: 'run' is a required property"),
    ],
)
def test_bad_metadata_is_one_error_line_and_nothing_changes(
    tmp_path: Path, content: str, expected: str
) -> None:
    meta = tmp_path / RUN / "cache" / "metadata.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(content)
    before = snapshot(tmp_path)
    result = invoke(tmp_path, "--out", str(tmp_path / "s.json"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {meta}{expected}")
    assert result.stderr.count("\n") == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("bad_file", ["../outside.pt", "/etc/passwd"])
def test_file_field_escaping_the_run_dir_is_refused(tmp_path: Path, bad_file: str) -> None:
    entry = make_entry()
    paths = seed_run(tmp_path, [entry])
    doc = json.loads(paths.metadata.read_text())
    doc["checkpoints"][0]["file"] = bad_file
    paths.metadata.write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    result = invoke(tmp_path, "--out", str(tmp_path / "s.json"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {paths.metadata}:$.checkpoints[0].file: does not match")
    assert snapshot(tmp_path) == before


def test_run_dir_outside_root_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--root", str(tmp_path), "--run", "../elsewhere", "--out", "s.json"])
    assert result.exit_code == 2
    assert (
        result.stderr == "Error: run directory '../elsewhere' escapes " + str(tmp_path) + " (contains '..')\n"
    )


def test_console_script_runs_without_torch_or_numpy(tmp_path: Path) -> None:
    seed_run(tmp_path, chain(2.0))
    probe = (
        "import sys, runpy; sys.argv=['ckpt-select', '--root', sys.argv[1], '--run', sys.argv[2], '--out', sys.argv[3]];"
        "import nanecho_tools.ckpt_select as m\n"
        "try:\n    m.main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print(sorted(n for n in ('torch', 'numpy', 'jsonschema') if n in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path), RUN, str(tmp_path / "s.json")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert out.stdout.strip().endswith("[]"), out.stdout + out.stderr
    assert json.loads((tmp_path / "s.json").read_text())["source"] == "cache"


def test_console_script_exit_code_and_stderr(tmp_path: Path, tool_bin: Path) -> None:
    a, b = chain(2.0, 1.2)
    paths = seed_run(tmp_path, [a, b])
    (paths.dir / b["file"]).unlink()
    done = subprocess.run(
        [
            str(tool_bin / "ckpt-select"),
            "--root",
            str(tmp_path),
            "--run",
            RUN,
            "--out",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("Error: refusing to resume") and "Traceback" not in done.stderr
    assert not (tmp_path / "s.json").exists()


def test_a_metric_no_checkpoint_records_is_refused_not_a_silent_fresh_start(tmp_path: Path) -> None:
    seed_run(tmp_path, chain(2.0, 1.5))
    before = snapshot(tmp_path)
    result = invoke(tmp_path, "--metric", "val_los", "--out", str(tmp_path / "s.json"))
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: no checkpoint records the metric 'val_los'; recorded: train_loss, val_bpb, val_loss\n",
    )
    assert snapshot(tmp_path) == before


def test_a_sidecar_whose_name_is_not_utf8_is_rejected_not_a_crash(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    paths = seed_run(tmp_path, [a, b])
    os.close(os.open(os.fsencode(paths.checkpoints_dir) + b"/\xff.json", os.O_CREAT | os.O_WRONLY))
    (tmp_path / "artifacts").mkdir()
    os.close(os.open(os.fsencode(tmp_path / "artifacts") + b"/\xfe.json", os.O_CREAT | os.O_WRONLY))
    out = tmp_path / "s.json"
    result = invoke(tmp_path, "--artifact-dir", str(tmp_path / "artifacts"), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["chosen"]["id"] == b["id"]
    assert {"id": "\ufffd.json", "tier": "cache", "reason": "file name is not UTF-8"} in doc["rejected"]
    assert {"id": "\ufffd.json", "tier": "artifact", "reason": "file name is not UTF-8"} in doc["rejected"]


def test_an_artifact_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    seed_run(tmp_path, chain(2.0, 1.5))
    (tmp_path / "README.md").write_text("x\n")
    result = invoke(
        tmp_path, "--artifact-dir", str(tmp_path / "README.md"), "--out", str(tmp_path / "s.json")
    )
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {tmp_path / 'README.md'}: --artifact-dir is not a directory\n",
    )
    assert not (tmp_path / "s.json").exists()

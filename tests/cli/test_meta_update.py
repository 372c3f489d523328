"""meta-update subcommands in-process: exact output, files, $GITHUB_OUTPUT, and bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanecho_core.fsio import atomic_write_json
from nanecho_tools.meta_update import app
from tests.factories import make_entry, make_session, write_fake_checkpoint
from tests.unit.test_selection import RUN, chain, seed_run

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_step(
    tmp_path: Path, entries: list[dict[str, Any]], session: str = "20261124T000000Z-aaaaaa"
) -> Path:
    run_dir = tmp_path / RUN
    for entry in entries:
        write_fake_checkpoint(run_dir, entry)
    step = tmp_path / f"step-{session}.json"
    atomic_write_json(
        step, make_session(session, checkpoints=entries, end_iteration=entries[-1]["iteration"])
    )
    return step


def test_record_adds_session_and_entries_then_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = chain(2.0, 1.5)
    step = write_step(tmp_path, [a, b])
    outputs = tmp_path / "gh"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    first = invoke("record", str(step), "--root", str(tmp_path), "--run", RUN)
    assert first.exit_code == 0
    assert first.stdout == (
        "recorded session 20261124T000000Z-aaaaaa: 2 checkpoint(s) added\n"
        f"best: {b['id']}\nlatest: {b['id']}\n"
    )
    assert outputs.read_text() == f"best_id={b['id']}\nbest_file={b['file']}\nlatest_id={b['id']}\n"
    meta = json.loads((tmp_path / RUN / "cache/metadata.json").read_text())
    assert [e["id"] for e in meta["checkpoints"]] == [a["id"], b["id"]]
    sessions = (tmp_path / RUN / "sessions.jsonl").read_text().splitlines()
    assert len(sessions) == 1 and 'checkpoints"' not in sessions[0]
    before = snapshot(tmp_path / RUN)
    again = invoke("record", str(step), "--root", str(tmp_path), "--run", RUN)
    assert again.exit_code == 0
    assert again.stdout.startswith("session 20261124T000000Z-aaaaaa already recorded: nothing added\n")
    assert snapshot(tmp_path / RUN) == before


def test_record_json_output(tmp_path: Path) -> None:
    step = write_step(tmp_path, chain(2.0))
    result = invoke("record", str(step), "--root", str(tmp_path), "--run", RUN, "--json")
    doc = json.loads(result.stdout)
    assert doc["added"] == [chain(2.0)[0]["id"]] and doc["session_appended"] is True


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{oops", ": malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[]", ":$: does not match the session schema: [] is not of type 'object'"),
    ],
)
def test_record_bad_step_json_changes_nothing(tmp_path: Path, content: str, expected: str) -> None:
    seed_run(tmp_path, chain(2.0))
    step = tmp_path / "step.json"
    step.write_text(content)
    before = snapshot(tmp_path)
    result = invoke("record", str(step), "--root", str(tmp_path), "--run", RUN)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {step}{expected}")
    assert result.stderr.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_record_missing_step_and_escaping_file_are_errors(tmp_path: Path) -> None:
    missing = invoke("record", str(tmp_path / "nope.json"), "--root", str(tmp_path), "--run", RUN)
    assert missing.exit_code == 2 and missing.stderr == f"Error: {tmp_path / 'nope.json'}: file not found\n"
    entry = make_entry()
    entry["file"] = "../../../escape.pt"
    step = tmp_path / "step.json"
    atomic_write_json(step, make_session(checkpoints=[entry]))
    bad = invoke("record", str(step), "--root", str(tmp_path), "--run", RUN)
    assert bad.exit_code == 2
    assert bad.stderr.startswith(f"Error: {step}:$.checkpoints[0].file: does not match the session schema")
    assert not (tmp_path / RUN / "cache/metadata.json").exists()
    entry["file"] = "cache/checkpoints/a\x00b.pt"  # the fuzzer's case: a traceback before
    atomic_write_json(step, make_session(checkpoints=[entry]))
    nul = invoke("record", str(step), "--root", str(tmp_path), "--run", RUN)
    assert nul.exit_code == 2 and nul.stderr.count("\n") == 1, nul.stderr
    assert nul.stderr.startswith(f"Error: {step}:$.checkpoints[0].file: does not match the session schema")


def test_record_refuses_a_session_of_another_run(tmp_path: Path) -> None:
    step = tmp_path / "step.json"
    atomic_write_json(step, make_session(run="nanecho-cached-full", checkpoints=[make_entry()]))
    result = invoke("record", str(step), "--root", str(tmp_path), "--run", RUN)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {step}:$.run: session belongs to run 'nanecho-cached-full', not 'nanecho-cached-ci'\n"
    )


def test_list_table_and_json(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    seed_run(tmp_path, [a, b])
    table = invoke("list", "--root", str(tmp_path), "--run", RUN)
    assert table.stdout.splitlines()[1:] == [
        f"   {a['id']:<48} {100:>8} {'2.1000':>8} {'2.0000':>8} ok",
        f"BL {b['id']:<48} {200:>8} {'2.1000':>8} {'1.5000':>8} ok",
        "2 checkpoint(s); B = best (val_loss), L = latest",
    ]
    rows = json.loads(invoke("list", "--root", str(tmp_path), "--run", RUN, "--json").stdout)
    assert [r["mark"] for r in rows] == ["", "BL"]


def test_show_one_entry_and_unknown_id(tmp_path: Path) -> None:
    (a,) = chain(2.0)
    paths = seed_run(tmp_path, [a])
    assert json.loads(invoke("show", "--root", str(tmp_path), "--run", RUN, a["id"]).stdout) == a
    unknown = invoke("show", "--root", str(tmp_path), "--run", RUN, "ckpt-x-00000001")
    assert (
        unknown.exit_code == 2
        and unknown.stderr == f"Error: {paths.metadata}: no checkpoint 'ckpt-x-00000001' in the index\n"
    )


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    a, b, c = chain(2.0, 1.5, 1.7)
    paths = seed_run(tmp_path, [a, b, c])
    ok = invoke("validate", "--root", str(tmp_path), "--run", RUN)
    assert ok.exit_code == 0 and ok.stdout == "ok: 3 checkpoint(s) consistent\n"
    (paths.dir / a["file"]).unlink()
    (paths.dir / b["file"]).write_bytes(b"z" * b["bytes"])
    doc = json.loads(paths.metadata.read_text())
    doc["checkpoints"][2]["parent_id"] = "ckpt-20261124T000000Z-zzzzzz-00000001"
    doc["best_id"] = c["id"]
    paths.metadata.write_text(json.dumps(doc))
    bad = invoke("validate", "--root", str(tmp_path), "--run", RUN)
    assert bad.exit_code == 2
    meta = paths.metadata
    assert bad.stderr.splitlines() == [
        f"Error: {meta}: $.checkpoints[0] {a['id']}: status ok but file {a['file']} is missing (run mark-missing)",
        f"Error: {meta}: $.checkpoints[1] {b['id']}: sha256 of {b['file']} does not match the index (corrupt)",
        f"Error: {meta}: {c['id']}: parent ckpt-20261124T000000Z-zzzzzz-00000001 is not in the index",
        f"Error: {meta}: $.best_id: is {c['id']!r}, recomputing gives {b['id']!r} (run rescore)",
    ]


def test_validate_reports_schema_problems_all_at_once(tmp_path: Path) -> None:
    paths = seed_run(tmp_path, chain(2.0, 1.5))
    doc = json.loads(paths.metadata.read_text())
    doc["checkpoints"][0]["status"] = "gone"
    doc["checkpoints"][1]["iteration"] = -5
    paths.metadata.write_text(json.dumps(doc))
    bad = invoke("validate", "--root", str(tmp_path), "--run", RUN, "--json")
    assert bad.exit_code == 2
    problems = json.loads(bad.stdout)["problems"]
    assert [p.split(":")[0] for p in problems] == [
        "schema $.checkpoints[0].status",
        "schema $.checkpoints[1].iteration",
    ]


def test_set_tag_note_validated_before_write(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    paths = seed_run(tmp_path, [a, b])
    base = ["--root", str(tmp_path), "--run", RUN]
    before = paths.metadata.read_bytes()
    for args, message in [
        (
            ["set", a["id"], "bogus", "1"],
            f"Error: {paths.metadata}: unknown or read-only field 'bogus'; settable fields: ",
        ),
        (["set", a["id"], "id", "x"], f"Error: {paths.metadata}: unknown or read-only field 'id'"),
        (
            ["set", a["id"], "metrics.train_loss", "0"],
            f"Error: {paths.metadata}:$.checkpoints[0].metrics.train_loss",
        ),
        (["set", a["id"], "file", "../x.pt"], f"Error: {paths.metadata}: checkpoint file '../x.pt' escapes "),
        (["tag", a["id"], "bad tag!"], f"Error: {paths.metadata}:$.checkpoints[0].tags[0]"),
        (["tag", a["id"], "keep\n"], f"Error: {paths.metadata}:$.checkpoints[0].tags[0]"),
        # not JSON numbers, so strings, which a metric cannot be (these crashed before)
        *[
            (["set", a["id"], field, value], f"Error: {paths.metadata}:$.checkpoints[0].{field}: ")
            for field in ("metrics.val_loss", "metrics.lr", "model.dropout")
            for value in ("NaN", "Infinity", "1e999", "9" * 400)
        ],
    ]:
        result = invoke(*args, *base)
        assert result.exit_code == 2, args
        assert result.stderr.startswith(message), result.stderr
        assert paths.metadata.read_bytes() == before
    done = invoke("set", a["id"], "metrics.train_loss", "null", *base)
    assert done.stdout == f"{a['id']}: metrics.train_loss 2.1 -> None\n"
    assert invoke("tag", a["id"], "keep", *base).stdout == f"{a['id']}: tag keep added\n"
    assert invoke("note", a["id"], "forced save", *base).exit_code == 0
    entry = json.loads(paths.metadata.read_text())["checkpoints"][0]
    assert entry["metrics"]["train_loss"] is None
    assert entry["tags"] == ["keep"]
    assert entry["notes"] == ["meta-update set metrics.train_loss: 2.1 -> null", "forced save"]


def test_setting_a_better_loss_moves_best(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    paths = seed_run(tmp_path, [a, b])
    invoke("set", a["id"], "metrics.val_loss", "1.0", "--root", str(tmp_path), "--run", RUN)
    assert json.loads(paths.metadata.read_text())["best_id"] == a["id"]


def test_remove_refuses_a_parent_and_removes_a_leaf(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    paths = seed_run(tmp_path, [a, b])
    base = ["--root", str(tmp_path), "--run", RUN]
    refused = invoke("remove", a["id"], *base)
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"Error: {paths.metadata}: {a['id']} is the parent of {b['id']}; remove or re-parent those first\n"
    )
    assert invoke("remove", b["id"], *base).stdout == f"removed {b['id']} from the index\n"
    doc = json.loads(paths.metadata.read_text())
    assert [e["id"] for e in doc["checkpoints"]] == [a["id"]] and doc["best_id"] == a["id"]
    assert (paths.dir / b["file"]).exists()


def test_mark_missing_and_rescore(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    a["metrics"]["accuracy"], b["metrics"]["accuracy"] = 0.7, 0.6
    paths = seed_run(tmp_path, [a, b])
    base = ["--root", str(tmp_path), "--run", RUN]
    (paths.dir / b["file"]).unlink()
    assert invoke("mark-missing", *base).stdout == f"missing: {b['id']}\n1 entry marked missing\n"
    entry = json.loads(paths.metadata.read_text())["checkpoints"][1]
    assert entry["status"] == "missing" and entry["storage"]["present_locally"] is False
    result = invoke("rescore", "--metric", "accuracy", "--mode", "max", *base)
    assert result.stdout == f"best: {b['id']} -> {a['id']}\n"


def test_prune_dry_run_then_prune_never_deletes_best_or_latest(tmp_path: Path) -> None:
    a, b, c, d = chain(1.9, 1.2, 1.8, 1.7)
    paths = seed_run(tmp_path, [a, b, c, d])
    base = ["--root", str(tmp_path), "--run", RUN]
    before = snapshot(tmp_path)
    dry = invoke("prune", "--keep-best", "0", "--keep-last", "0", "--dry-run", *base)
    size = a["bytes"] + c["bytes"] + (paths.dir / a["file"]).with_suffix(".json").stat().st_size
    size += (paths.dir / c["file"]).with_suffix(".json").stat().st_size
    assert dry.stdout == (
        f"would delete {a['file']}\nwould delete {c['file']}\n"
        f"kept {b['id']} (best)\nkept {d['id']} (latest)\n"
        f"would delete 2 checkpoint(s), would free {size} bytes\n"
    )
    assert snapshot(tmp_path) == before
    real = invoke("prune", "--keep-best", "0", "--keep-last", "0", *base)
    assert real.stdout.endswith(f"deleted 2 checkpoint(s), freed {size} bytes\n")
    assert not (paths.dir / a["file"]).exists() and (paths.dir / b["file"]).exists()
    statuses = [e["status"] for e in json.loads(paths.metadata.read_text())["checkpoints"]]
    assert statuses == ["pruned", "ok", "pruned", "ok"]
    assert invoke("validate", *base).exit_code == 0


def test_prune_refuses_before_deleting_anything_when_a_planned_file_is_not_a_file(tmp_path: Path) -> None:
    a, b, c, d = chain(1.9, 1.2, 1.8, 1.7)
    paths = seed_run(tmp_path, [a, b, c, d])
    target = paths.dir / c["file"]
    target.unlink()
    target.mkdir()
    before = snapshot(tmp_path)
    result = invoke("prune", "--keep-best", "0", "--keep-last", "0", "--root", str(tmp_path), "--run", RUN)
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {target}: cannot prune {c['id']}: its file is not a regular file\n",
    )
    after = snapshot(tmp_path)
    assert after.pop(f"{RUN}/.lock") == b""  # the writers' lock, empty: taken before the plan
    assert after == before  # a's file, planned first, is still there


def test_prune_that_fails_midway_records_exactly_what_it_deleted(tmp_path: Path) -> None:
    a, b, c, d = chain(1.9, 1.2, 1.8, 1.7)
    paths = seed_run(tmp_path, [a, b, c, d])
    sidecar = (paths.dir / c["file"]).with_suffix(".json")
    sidecar.unlink()
    (sidecar / "x").mkdir(parents=True)  # a directory where c's sidecar was: unlink fails
    base = ["--root", str(tmp_path), "--run", RUN]
    result = invoke("prune", "--keep-best", "0", "--keep-last", "0", *base)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {sidecar}: cannot delete the sidecar of {c['id']}: Is a directory\n"
    statuses = [e["status"] for e in json.loads(paths.metadata.read_text())["checkpoints"]]
    assert statuses == ["pruned", "ok", "pruned", "ok"]  # a and c's weights are gone, and say so
    assert not (paths.dir / a["file"]).exists() and not (paths.dir / c["file"]).exists()
    assert invoke("validate", *base).exit_code == 0


def test_import_legacy_fixture_and_migrate_v1(tmp_path: Path, repo_root: Path) -> None:
    base = ["--root", str(tmp_path), "--run", RUN]
    result = invoke("import-legacy", str(repo_root / "tests/fixtures/metadata.json"), *base)
    assert result.exit_code == 0
    assert result.stdout.endswith(
        "imported 17 of 17 legacy checkpoint(s); best: ckpt-20260731T145425Z-22deff1b-00000500\n"
    )
    again = invoke("import-legacy", str(repo_root / "tests/fixtures/metadata.json"), *base)
    assert again.stdout.endswith(
        "imported 0 of 17 legacy checkpoint(s); best: ckpt-20260731T145425Z-22deff1b-00000500\n"
    )
    assert invoke("migrate", *base).stdout == "already current\n"


def test_import_legacy_rejects_a_schema_violation(tmp_path: Path) -> None:
    legacy = tmp_path / "old.json"
    legacy.write_text(json.dumps({"ckpt_x": {"checkpoint_id": "ckpt_x", "iteration": -1}}))
    result = invoke("import-legacy", str(legacy), "--root", str(tmp_path), "--run", RUN)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {legacy}:$.ckpt_x: does not match the legacy_metadata schema")
    assert not (tmp_path / RUN).exists() or not (tmp_path / RUN / "cache/metadata.json").exists()


def test_import_legacy_takes_an_integral_float_iteration_as_the_integer(
    tmp_path: Path, repo_root: Path
) -> None:
    # JSON Schema lets 500.0 be an integer; it used to crash the id formatting (found by the fuzzer).
    doc = json.loads((repo_root / "tests/fixtures/metadata.json").read_text())
    for rec in doc.values():
        rec["iteration"] = float(rec["iteration"])
    legacy = tmp_path / "old.json"
    legacy.write_text(json.dumps(doc))
    result = invoke("import-legacy", str(legacy), "--root", str(tmp_path), "--run", RUN)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(
        "imported 17 of 17 legacy checkpoint(s); best: ckpt-20260731T145425Z-22deff1b-00000500\n"
    )
    entries = json.loads((tmp_path / RUN / "cache/metadata.json").read_text())["checkpoints"]
    assert all(type(e["iteration"]) is int for e in entries)


def test_import_legacy_refuses_an_impossible_file_size(tmp_path: Path, repo_root: Path) -> None:
    # 1e308 MB overflowed to an infinite byte count and a traceback (found by the fuzzer).
    doc = json.loads((repo_root / "tests/fixtures/metadata.json").read_text())
    key = next(iter(doc))
    doc[key]["file_size_mb"] = 1e308
    legacy = tmp_path / "old.json"
    legacy.write_text(json.dumps(doc))
    result = invoke("import-legacy", str(legacy), "--root", str(tmp_path), "--run", RUN)
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: {legacy}:$.{key}.file_size_mb: does not match the legacy_metadata schema: 1e+308 is greater than "
        "the maximum of 1000000000.0"
    )


@pytest.mark.parametrize("side", ["base", "ours", "theirs"])
@pytest.mark.parametrize(
    ("kind", "message"),
    [("directory", "is a directory, expected a JSON file"), ("binary", "not UTF-8 text")],
)
def test_merge_driver_refuses_an_unreadable_side_in_one_line_leaving_ours_alone(
    tmp_path: Path, side: str, kind: str, message: str
) -> None:
    # git runs the driver: a traceback here was a merge conflict with a Python stack in the log.
    index = seed_run(tmp_path, chain(2.0), files=False).metadata.read_bytes()
    sides = {name: tmp_path / f"{name}.json" for name in ("base", "ours", "theirs")}
    for name, path in sides.items():
        if name != side:
            path.write_bytes(index)
        elif kind == "directory":
            path.mkdir()
        else:
            path.write_bytes(b"\x80\xff{")
    before = snapshot(tmp_path)
    result = invoke("merge-driver", *(str(p) for p in sides.values()))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {sides[side]}: {message}\n"
    assert snapshot(tmp_path) == before


def test_install_merge_driver_writes_local_git_config(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    result = invoke("install-merge-driver", "--root", str(tmp_path))
    assert result.exit_code == 0
    value = subprocess.run(
        ["git", "-C", str(tmp_path), "config", "--local", "merge.nanecho-metadata.driver"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert value == "meta-update merge-driver %O %A %B\n"


def test_validate_reports_a_checkpoint_symlinked_out_of_the_run(tmp_path: Path) -> None:
    (a,) = chain(2.0)
    paths = seed_run(tmp_path, [a])
    outside = tmp_path / "outside.pt"
    (paths.dir / a["file"]).rename(outside)
    (paths.dir / a["file"]).symlink_to(outside)
    bad = invoke("validate", "--root", str(tmp_path), "--run", RUN)
    assert bad.exit_code == 2
    assert bad.stderr == (
        f"Error: {paths.metadata}: $.checkpoints[0] {a['id']}: checkpoint file {a['file']!r} "
        f"resolves outside {paths.dir} (symlink?)\n"
    )


def test_meta_update_never_imports_torch_numpy_or_jsonschema_on_the_happy_path(tmp_path: Path) -> None:
    import os
    import sys

    step = write_step(tmp_path, chain(2.0))
    probe = (
        "import sys\nimport nanecho_tools.meta_update as m\nstep, root = sys.argv[1:3]\n"
        "for args in (['record', step], ['list'], ['validate']):\n"
        "    sys.argv = ['meta-update', *args, '--root', root, '--run', '" + RUN + "']\n"
        "    try:\n        m.main()\n    except SystemExit as e:\n        assert not e.code, e.code\n"
        "print(sorted(n for n in ('torch', 'numpy', 'jsonschema') if n in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(step), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]"), done.stdout


def test_validate_metadata_only_passes_a_fresh_clone_without_weights(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    paths = seed_run(tmp_path, [a, b])
    for entry in (a, b):
        (paths.dir / entry["file"]).unlink()  # a fresh clone: the weights are in the Actions cache
    full = invoke("validate", "--root", str(tmp_path), "--run", RUN)
    assert full.exit_code == 2 and full.stderr.count("is missing (run mark-missing)") == 2
    light = invoke("validate", "--metadata-only", "--root", str(tmp_path), "--run", RUN)
    assert light.exit_code == 0 and light.stdout == "ok: 2 checkpoint(s) consistent\n"
    doc = json.loads(paths.metadata.read_text())
    doc["best_id"] = a["id"]
    paths.metadata.write_text(json.dumps(doc))
    wrong = invoke("validate", "--metadata-only", "--root", str(tmp_path), "--run", RUN)
    assert wrong.exit_code == 2 and "$.best_id" in wrong.stderr


@pytest.mark.parametrize("days", ["-1", "nan", "inf", "1e10", "100001"])
def test_compact_refuses_a_horizon_that_is_not_a_sane_number_of_days(tmp_path: Path, days: str) -> None:
    seed_run(tmp_path, chain(1.9, 1.2))
    before = snapshot(tmp_path)
    result = invoke("compact", "--older-than", days, "--root", str(tmp_path), "--run", RUN)
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: --older-than must be a number of days from 0 to 100000\n",
    )
    after = snapshot(tmp_path)
    after.pop(f"{RUN}/.lock", None)
    assert after == before


def test_writers_refuse_a_run_path_through_a_file_and_a_lock_that_is_a_directory(tmp_path: Path) -> None:
    paths = seed_run(tmp_path, chain(1.9, 1.2))
    (tmp_path / "README.md").write_text("x\n")
    result = invoke("tag", "x", "keep", "--root", str(tmp_path), "--run", "README.md/sub")
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {tmp_path / 'README.md/sub'}: cannot create the run directory: Not a directory\n",
    )
    paths.lock.unlink(missing_ok=True)
    paths.lock.mkdir()
    before = snapshot(tmp_path)
    result = invoke("tag", "x", "keep", "--root", str(tmp_path), "--run", RUN)
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {paths.lock}: cannot open the lock file: Is a directory\n",
    )
    assert snapshot(tmp_path) == before


def test_rescore_refuses_a_metric_no_checkpoint_records(tmp_path: Path) -> None:
    paths = seed_run(tmp_path, chain(1.9, 1.2))
    before = paths.metadata.read_bytes()
    result = invoke("rescore", "--metric", "nonexistent", "--root", str(tmp_path), "--run", RUN)
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: no checkpoint records the metric 'nonexistent'; recorded: train_loss, val_bpb, val_loss\n",
    )
    assert paths.metadata.read_bytes() == before


def test_a_text_argument_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    a, b = chain(1.9, 1.2)
    paths = seed_run(tmp_path, [a, b])
    before = paths.metadata.read_bytes()
    # bytes that are not UTF-8 reach Python's argv as lone surrogates (surrogateescape)
    result = invoke("note", a["id"], "x\udcff", "--root", str(tmp_path), "--run", RUN)
    assert (result.exit_code, result.stderr) == (2, "Error: TEXT is not valid UTF-8 text\n")
    assert paths.metadata.read_bytes() == before

"""Path traversal: `--run` outside the root (../, absolute, symlink) and checkpoint `file` fields that
escape the run dir (symlinked files or directories) are refused; nothing outside is read or written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nanecho_core.fsio import atomic_write_json, sha256_file
from tests.reliability.conftest import add_fake_session, write_step
from tests.reliability.harness import NOT_STATE, Workspace, one_error_line, tree_digest


def _tool_args(tool: str, ws: Workspace, run: str) -> list[str]:
    out = str(ws.out / f"{tool}.json")
    common = ["--root", str(ws.root), "--run", run]
    return {
        "ckpt-select": ["ckpt-select", *common, "--out", out],
        "train-step": ["train-step", *common, "--iters", "1", "--device", "cpu", "--out", out],
        "meta-update": ["meta-update", "list", *common],
        "progress-commit": ["progress-commit", *common, "--out", out],
        "summarize": ["summarize", *common],
    }[tool]


@pytest.fixture
def outside(fake_ws: Workspace) -> Path:
    """A directory beside the repository, holding a run-shaped tree an escape would reach."""
    target = fake_ws.base / "outside" / "victim-run"
    (target / "cache").mkdir(parents=True)
    atomic_write_json(target / "cache" / "metadata.json", {"not": "an index"})
    (target / "sessions.jsonl").write_text("precious\n")
    return target


@pytest.mark.parametrize("tool", ["ckpt-select", "train-step", "meta-update", "progress-commit", "summarize"])
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_run_dir_outside_the_root_is_refused_by_every_tool(
    fake_ws: Workspace, cli, outside: Path, tool: str, how: str
) -> None:
    if how == "dotdot":
        run = os.path.relpath(outside, fake_ws.root)
    elif how == "absolute":
        run = str(outside)
    else:
        (fake_ws.root / ".training-progress" / "escape").symlink_to(outside, target_is_directory=True)
        run = ".training-progress/escape"
    before = tree_digest(fake_ws.base / "outside")
    repo_before = tree_digest(fake_ws.root, skip=(*NOT_STATE, "index"))

    code, _out, err = cli(_tool_args(tool, fake_ws, run))

    assert code == 2, err
    assert one_error_line(err) is None, err
    expected = {
        "dotdot": "escapes",
        "absolute": "run directory is outside the root",
        "symlink": "resolves outside",
    }[how]
    assert expected in err
    assert tree_digest(fake_ws.base / "outside") == before
    assert tree_digest(fake_ws.root, skip=(*NOT_STATE, "index")) == repo_before
    assert not (fake_ws.out / f"{tool}.json").exists()


def _symlinked_best(fake_ws: Workspace, cli, *, link_dir: bool) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """Index two checkpoints; the better one's file (or its whole directory) becomes a symlink to a
    copy outside the run dir whose bytes still match the recorded sha256."""
    step = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0, 1.96])
    assert cli(fake_ws.meta_args("record", str(write_step(fake_ws, step))))[0] == 0
    older, best = step["checkpoints"]
    outside = fake_ws.base / "elsewhere"
    outside.mkdir()
    if link_dir:
        ckpts = fake_ws.run_dir / "cache" / "checkpoints"
        ckpts.rename(outside / "checkpoints")
        ckpts.symlink_to(outside / "checkpoints", target_is_directory=True)
    else:
        pt = fake_ws.run_dir / best["file"]
        pt.rename(outside / pt.name)
        pt.symlink_to(outside / pt.name)
        assert sha256_file(pt) == best["sha256"]
    return older, best


def test_checkpoint_file_symlinked_out_of_the_run_dir_is_refused(fake_ws: Workspace, cli) -> None:
    # ckpt-select's design: an index entry that escapes through a symlink is an error, not a skipped
    # candidate (tests/unit/test_selection.py says so too); either way it is never resumed from.
    _older, best = _symlinked_best(fake_ws, cli, link_dir=False)
    sel = fake_ws.out / "selection.json"
    code, _out, err = cli(fake_ws.select_args(sel))
    assert code == 2 and one_error_line(err) is None, err
    assert err == (f"Error: checkpoint file {best['file']!r} resolves outside {fake_ws.run_dir} (symlink?)\n")
    assert not sel.exists()

    code, _out, err = cli(fake_ws.meta_args("validate"))
    assert code == 2 and "resolves outside" in err


def test_checkpoint_directory_symlinked_out_of_the_run_dir_is_refused(fake_ws: Workspace, cli) -> None:
    _symlinked_best(fake_ws, cli, link_dir=True)
    sel = fake_ws.out / "selection.json"
    code, _out, err = cli(fake_ws.select_args(sel, allow_fresh=True))
    assert code == 2 and one_error_line(err) is None and "resolves outside" in err, err
    assert not sel.exists()
    code, _out, err = cli(fake_ws.meta_args("validate"))
    assert code == 2 and "resolves outside" in err


@pytest.mark.parametrize(
    "file", ["../../../outside.pt", "/etc/passwd", "cache/checkpoints/../../../../x.pt", "cache\\..\\x.pt"]
)
def test_step_json_whose_checkpoint_file_escapes_is_refused_by_record(
    fake_ws: Workspace, cli, file: str
) -> None:
    step = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0])
    step["checkpoints"][0]["file"] = file
    before = tree_digest(fake_ws.run_dir)
    code, _out, err = cli(fake_ws.meta_args("record", str(write_step(fake_ws, step))))
    assert code == 2 and one_error_line(err) is None, err
    assert "$.checkpoints[0].file" in err
    assert tree_digest(fake_ws.run_dir) == before


def test_sidecar_whose_file_escapes_is_not_a_candidate(fake_ws: Workspace, cli) -> None:
    step = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0])
    entry = step["checkpoints"][0]
    sidecar = fake_ws.run_dir / entry["file"].replace(".pt", ".json")
    sidecar.write_text(json.dumps({**entry, "file": "../../../../etc/hostname"}))
    sel = fake_ws.out / "selection.json"
    code, _out, err = cli(fake_ws.select_args(sel))
    assert code == 0, err
    doc = json.loads(sel.read_text())
    assert doc["chosen"] is None
    assert (
        "does not match the checkpoint schema" in {r["id"]: r["reason"] for r in doc["rejected"]}[entry["id"]]
    )


def _bad_cli_paths(ws: Workspace) -> dict[str, list[str]]:
    root, run, d, missing = str(ws.root), ws.run, str(ws.out / "adir"), str(ws.out / "missing.json")
    ok_out = str(ws.out / "result.json")
    common = ["--root", root, "--run", run]
    return {
        "ckpt-select --out DIR": ["ckpt-select", *common, "--out", d],
        "ckpt-select --config DIR": ["ckpt-select", *common, "--config", d, "--out", ok_out],
        "ckpt-select --config missing": ["ckpt-select", *common, "--config", missing, "--out", ok_out],
        "ckpt-select --root missing": ["ckpt-select", "--root", missing, "--run", run, "--out", ok_out],
        "meta-update record DIR": ["meta-update", "record", d, *common],
        "meta-update record missing": ["meta-update", "record", missing, *common],
        "meta-update import-legacy DIR": ["meta-update", "import-legacy", d, *common],
        "progress-commit --message-from DIR": [
            "progress-commit",
            *common,
            "--message-from",
            d,
            "--out",
            ok_out,
        ],
        "train-step --resume DIR": ["train-step", *common, "--resume", d, "--out", ok_out],
        "train-step --init-from DIR": ["train-step", *common, "--init-from", d, "--out", ok_out],
        "train-step --corpus DIR": ["train-step", *common, "--corpus", d, "--iters", "1", "--out", ok_out],
        "train-step --out DIR": ["train-step", *common, "--iters", "1", "--device", "cpu", "--out", d],
    }


@pytest.mark.parametrize("case", list(_bad_cli_paths(Workspace(base=Path("/x"))).keys()))
def test_bad_cli_path_is_one_error_line_before_anything_is_written(
    fake_ws: Workspace, cli, case: str
) -> None:
    step = add_fake_session(fake_ws, "20261124T000000Z-aaaaaa", [2.0])
    assert cli(fake_ws.meta_args("record", str(write_step(fake_ws, step))))[0] == 0
    (fake_ws.out / "adir").mkdir()
    before = tree_digest(fake_ws.base, skip=(*NOT_STATE, "index"))

    code, _out, err = cli(_bad_cli_paths(fake_ws)[case])

    assert code == 2, err
    assert one_error_line(err) is None, err
    assert tree_digest(fake_ws.base, skip=(*NOT_STATE, "index")) == before

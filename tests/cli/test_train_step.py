"""train-step in-process: step.json, sidecars, outputs, resume/init-from, and refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanecho_core import schema
from nanecho_core.checkpoint import load_checkpoint, save_checkpoint
from nanecho_tools.train_step import app
from tests.trainer_support import assert_same_training_state, write_corpus, write_selection, write_tiny_config

runner = CliRunner()
RUN = ".training-progress/nanecho-test"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_tiny_config(tmp_path)
    write_corpus(tmp_path)
    return tmp_path


def train(root: Path, *args: str, out: str = "step.json") -> Any:
    argv = ["--root", str(root), "--run", RUN, "--config", str(root / "tiny.json")]
    argv += ["--corpus", str(root / "corpus.txt"), "--device", "cpu", "--out", str(root / out), *args]
    return runner.invoke(app, argv)


def step(root: Path, name: str = "step.json") -> dict[str, Any]:
    return json.loads((root / name).read_text())


def test_fresh_session_writes_valid_step_json_checkpoints_sidecars_and_outputs(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = root / "gh_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("NANECHO_CACHE_KEY", "nanecho-test-123")
    result = train(root, "--iters", "25")
    assert result.exit_code == 0, result.stderr
    record = schema.validate(step(root), "session")
    assert (record["start_iteration"], record["end_iteration"]) == (0, 25)
    assert record["resume_source"] == "fresh" and record["fresh_reason"] == "no --resume given"
    assert record["stop_reason"] == "budget_iters" and record["tokens_seen"] == 25 * 4 * 16
    assert [p[0] for p in record["eval_points"]] == [0, 10, 20, 25]
    assert record["eval_points"][0][2] is None and all(p[2] > 0 for p in record["eval_points"][1:])
    assert record["start_val_loss"] == record["eval_points"][0][1]
    assert record["end_val_loss"] == record["eval_points"][-1][1]
    iterations = [c["iteration"] for c in record["checkpoints"]]
    assert iterations[-1] == 25 and set(iterations) <= {10, 20, 25}
    assert record["checkpoints_written"] == [c["id"] for c in record["checkpoints"]]
    run_dir = root / RUN
    for entry in record["checkpoints"]:
        pt = run_dir / entry["file"]
        assert json.loads(pt.with_suffix(".json").read_text()) == entry
        assert entry["storage"] == {
            "cache_key": "nanecho-test-123",
            "artifact_name": None,
            "present_locally": True,
        }
        state = load_checkpoint(pt, entry["sha256"])
        assert state["iteration"] == entry["iteration"] and state["id"] == entry["id"]
    assert record["checkpoints"][1]["parent_id"] == record["checkpoints"][0]["id"]
    lines = outputs.read_text().splitlines()
    assert lines == [
        f"session_id={record['session_id']}",
        "end_iteration=25",
        f"end_val_loss={record['end_val_loss']}",
        "stop_reason=budget_iters",
        f"checkpoint_file={record['checkpoints'][-1]['file']}",
    ]
    assert "iter 25/25" in result.stderr and "eval at iter 10" in result.stderr


@pytest.mark.slow
def test_resume_from_selection_continues_the_same_trajectory(root: Path) -> None:
    assert train(root, "--iters", "30", out="one.json").exit_code == 0
    one = step(root, "one.json")
    assert train(root, "--iters", "13", out="a.json").exit_code == 0
    first = step(root, "a.json")
    last = first["checkpoints"][-1]
    write_selection(root / "sel.json", last, Path(RUN) / last["file"], run="nanecho-test", regression=True)
    result = train(root, "--resume", str(root / "sel.json"), "--until-iter", "30", out="b.json")
    assert result.exit_code == 0, result.stderr
    second = step(root, "b.json")
    assert second["resume_source"] == "cache" and second["resumed_from"] == last["id"]
    assert second["fresh_reason"] is None and second["regression_allowed"] is True
    assert (second["start_iteration"], second["end_iteration"]) == (13, 30)
    assert second["start_val_loss"] == last["metrics"]["val_loss"]
    assert second["checkpoints"][0]["parent_id"] == last["id"]
    run_dir = root / RUN
    final_one = load_checkpoint(run_dir / one["checkpoints"][-1]["file"], None)
    final_two = load_checkpoint(run_dir / second["checkpoints"][-1]["file"], None)
    assert_same_training_state(final_one, final_two)
    scheduled = [p for p in one["eval_points"] if p[0] % 10 == 0]
    resumed_scheduled = [p for p in first["eval_points"] + second["eval_points"] if p[0] % 10 == 0]
    assert resumed_scheduled == scheduled


def test_fresh_selection_starts_fresh_with_its_reason(root: Path) -> None:
    doc = {
        "schema_version": 1, "run": "nanecho-test", "source": "fresh", "chosen": None, "resume_path": None,
        "reason": "no usable checkpoint: 2 rejected", "rejected": [], "regression": False,
        "allow_fresh": True, "metric": "val_loss", "mode": "min",
    }  # fmt: skip
    (root / "sel.json").write_text(json.dumps(doc))
    assert train(root, "--resume", str(root / "sel.json"), "--iters", "3").exit_code == 0
    record = step(root)
    assert record["resume_source"] == "fresh" and record["fresh_reason"] == "no usable checkpoint: 2 rejected"
    assert record["regression_allowed"] is False and record["end_iteration"] == 3


@pytest.mark.parametrize(("key", "value"), [("eval_iters", 3), ("batch_size", 5)])
def test_resuming_with_a_different_eval_set_is_refused(root: Path, key: str, value: int) -> None:
    # eval batches = f(eval split, block, batch_size, eval_iters): the split's fingerprint alone
    # cannot tell that the val losses of the two sessions would not be comparable.
    assert train(root, "--iters", "4").exit_code == 0
    entry = step(root)["checkpoints"][-1]
    write_selection(root / "sel.json", entry, Path(RUN) / entry["file"])
    config = json.loads((root / "tiny.json").read_text())
    was = config["train"][key]
    assert was != value
    config["train"][key] = value
    (root / "other.json").write_text(json.dumps(config))
    argv = ["--config", str(root / "other.json"), "--resume", str(root / "sel.json"), "--iters", "2"]
    result = train(root, *argv, out="other-step.json")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"Error: {root / RUN / entry['file']}: checkpoint's val losses were measured with train.{key} {was}; "
        f"this config has {value}: a different eval set, so losses would not be comparable: keep those "
        "settings to resume, or use --init-from"
    ]
    assert not (root / "other-step.json").exists()
    ckpt = root / RUN / entry["file"]
    result = train(
        root, "--config", str(root / "other.json"), "--init-from", str(ckpt), "--iters", "1", out="i.json"
    )
    assert result.exit_code == 0, result.stderr
    # The new lineage's losses come from other eval batches: its entries say so, so ckpt-select and
    # the index never rank them against the first lineage's.
    new_entry = step(root, "i.json")["checkpoints"][-1]
    assert new_entry["data_fingerprint"] == entry["data_fingerprint"]
    assert new_entry["eval_fingerprint"] != entry["eval_fingerprint"]


@pytest.mark.parametrize("matches_split", [True, False])
def test_checkpoints_from_before_eval_set_fingerprints_still_resume(root: Path, matches_split: bool) -> None:
    # Older checkpoints fingerprinted only the eval split; with the same eval settings (checked
    # separately) that still identifies the eval batches, so they resume and their lineage keeps
    # that fingerprint; any other value is refused.
    assert train(root, "--iters", "4").exit_code == 0
    entry = step(root)["checkpoints"][-1]
    pt = root / RUN / entry["file"]
    state = load_checkpoint(pt, entry["sha256"])
    split_fp = state["fingerprints"].pop("eval_split")
    assert state["fingerprints"]["eval"] == entry["eval_fingerprint"] != split_fp
    old_fp = split_fp if matches_split else "0" * 64
    state["fingerprints"]["eval"] = old_fp
    sha, size = save_checkpoint(state, pt)
    old_entry = {**entry, "sha256": sha, "bytes": size, "eval_fingerprint": old_fp}
    write_selection(root / "sel.json", old_entry, Path(RUN) / entry["file"])
    result = train(root, "--resume", str(root / "sel.json"), "--iters", "2", out="b.json")
    if matches_split:
        assert result.exit_code == 0, result.stderr
        resumed = step(root, "b.json")
        assert resumed["start_iteration"] == 4 and resumed["resumed_from"] == entry["id"]
        # The lineage keeps its fingerprint, so its old entries stay comparable with the new ones
        # (best, retention, ckpt-select), and it resumes again the same way.
        newer = resumed["checkpoints"][-1]
        assert newer["eval_fingerprint"] == split_fp
        assert (
            load_checkpoint(root / RUN / newer["file"], newer["sha256"])["fingerprints"]["eval"] == split_fp
        )
        write_selection(root / "sel2.json", newer, Path(RUN) / newer["file"])
        again = train(root, "--resume", str(root / "sel2.json"), "--iters", "2", out="c.json")
        assert again.exit_code == 0, again.stderr
        assert step(root, "c.json")["checkpoints"][-1]["eval_fingerprint"] == split_fp
    else:
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            f"Error: {pt}: checkpoint was evaluated on a different eval set (eval fingerprint differs); "
            "its losses are not comparable: start fresh or use --init-from"
        ]
        assert not (root / "b.json").exists()


@pytest.mark.slow
def test_resuming_into_a_different_architecture_is_refused_but_init_from_works(root: Path) -> None:
    assert train(root, "--iters", "5").exit_code == 0
    entry = step(root)["checkpoints"][-1]
    write_selection(root / "sel.json", entry, Path(RUN) / entry["file"])
    bigger = json.loads((root / "tiny.json").read_text())
    bigger["model"]["n_embd"] = 64
    (root / "big.json").write_text(json.dumps(bigger))
    argv = ["--config", str(root / "big.json"), "--resume", str(root / "sel.json"), "--iters", "2"]
    result = train(root, *argv, out="big-step.json")
    assert result.exit_code == 2
    assert "different model architecture" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (root / "big-step.json").exists()

    ckpt = root / RUN / entry["file"]
    result = train(root, "--init-from", str(ckpt), "--iters", "4", out="init.json")
    assert result.exit_code == 0, result.stderr
    record = step(root, "init.json")
    assert record["resume_source"] == "init" and record["init_from"] == entry["id"]
    assert record["resumed_from"] is None and record["start_iteration"] == 0 and record["end_iteration"] == 4
    result = train(root, "--config", str(root / "big.json"), "--init-from", str(ckpt), out="x.json")
    assert result.exit_code == 2 and "architecture" in result.stderr


def test_corrupt_resume_checkpoint_is_refused(root: Path) -> None:
    assert train(root, "--iters", "5").exit_code == 0
    entry = step(root)["checkpoints"][-1]
    ckpt = root / RUN / entry["file"]
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 3] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    write_selection(root / "sel.json", entry, Path(RUN) / entry["file"])
    result = train(root, "--resume", str(root / "sel.json"), out="again.json")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {root / RUN / entry['file']}: checkpoint sha256 mismatch")
    assert not (root / "again.json").exists()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        pytest.param(
            lambda r: (r / "sel.json").write_text("{not json"),
            ["--resume", "{root}/sel.json"],
            "Error: {root}/sel.json: malformed JSON",
            id="malformed-selection",
        ),
        pytest.param(
            lambda r: (r / "sel.json").write_text(json.dumps({"schema_version": 1, "source": "cache"})),
            ["--resume", "{root}/sel.json"],
            "Error: {root}/sel.json:$: does not match the selection schema",
            id="schema-violating-selection",
        ),
        pytest.param(
            lambda r: (r / "bad.json").write_text(
                json.dumps({"schema_version": 1, "train": {"batch_size": 0}})
            ),
            ["--config", "{root}/bad.json"],
            "Error: {root}/bad.json:$.train.batch_size: does not match the config schema",
            id="schema-violating-config",
        ),
        pytest.param(
            None,
            ["--corpus", "{root}/missing.txt"],
            "Error: {root}/missing.txt: corpus not found",
            id="missing-corpus",
        ),
        pytest.param(
            None, ["--run", "../outside"], "Error: run directory '../outside' escapes", id="run-escapes-root"
        ),
        pytest.param(None, ["--iters", "-1"], "Error: --iters must be >= 0", id="negative-iters"),
        pytest.param(
            lambda r: (r / "sel.json").write_text("{}"),
            ["--resume", "{root}/sel.json", "--init-from", "{root}/x.pt"],
            "Error: --resume and --init-from are mutually exclusive",
            id="resume-and-init-from",
        ),
        pytest.param(
            None,
            ["--init-from", "{root}/nope.pt"],
            "Error: {root}/nope.pt: checkpoint file not found",
            id="init-missing",
        ),
        pytest.param(
            lambda r: (r / "fake.pt").write_bytes(b"not a zip"),
            ["--init-from", "{root}/fake.pt"],
            "Error: {root}/fake.pt: checkpoint refused by the weights-only loader: ",
            id="init-not-a-checkpoint",
        ),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(
    root: Path, setup: Any, args: list[str], expected: str
) -> None:
    if setup is not None:
        setup(root)
    before = _snapshot(root)
    result = train(root, *[a.format(root=root) for a in args])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(expected.format(root=root)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _snapshot(root) == before
    assert not (root / RUN).exists()


def _plant(kind: str) -> Any:
    """Put a file, a dangling symlink or a symlink loop where the checkpoint directory goes."""

    def plant(root: Path) -> None:
        where = root / RUN / "cache" / "checkpoints"
        where.parent.mkdir(parents=True)
        if kind == "file":
            where.write_text("x")
        elif kind == "dangling":
            where.symlink_to("nowhere")
        else:
            where.symlink_to(where.name)

    return plant


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        *(
            pytest.param(
                _plant(kind),
                [],
                f"Error: {{root}}/{RUN}/cache/checkpoints: is not a directory: checkpoints cannot be written there",
                id=f"checkpoints-{kind}",
            )
            for kind in ("file", "dangling", "loop")
        ),
        pytest.param(
            lambda r: (r / "README.md").write_text("x"),
            ["--out", "{root}/README.md/a/step.json"],
            "Error: {root}/README.md/a/step.json: --out cannot be written: something on its path is not a directory",
            id="out-under-a-file",
        ),
        pytest.param(
            lambda r: None,
            ["--out", f"{{root}}/{RUN}/sessions.jsonl"],
            f"Error: {{root}}/{RUN}/sessions.jsonl: --out names a file that run nanecho-test keeps; write it elsewhere",
            id="out-is-the-session-log",
        ),
    ],
)
def test_an_unwritable_destination_is_refused_before_training(
    root: Path, setup: Any, args: list[str], expected: str
) -> None:
    """Before, a session trained its whole budget, then crashed at the save (FileExistsError)."""
    setup(root)
    before = _snapshot(root)
    result = train(root, "--iters", "2", *[a.format(root=root) for a in args])
    assert result.exit_code == 2, result.stderr
    assert result.stderr == expected.format(root=root) + "\n"
    assert "eval at iter" not in result.stderr
    assert _snapshot(root) == before
    assert list((root / RUN).rglob("*.pt")) == []


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("NANECHO_CACHE_KEY", "k\udcff", "$NANECHO_CACHE_KEY is not valid UTF-8 text"),
        ("NANECHO_CACHE_KEY", "k" * 513, "$NANECHO_CACHE_KEY is longer than 512 characters"),
        ("NANECHO_HOST", "ab\udcffcd", "$NANECHO_HOST (or the host name) is not valid UTF-8 text"),
        ("NANECHO_HOST", "h" * 256, "$NANECHO_HOST (or the host name) is longer than 255 characters"),
        ("GITHUB_SHA", "NOTHEX", "$GITHUB_SHA must be a commit sha (7 to 64 hex digits), got 'nothex'"),
    ],
)
def test_a_bad_environment_value_is_refused_before_training(
    root: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, error: str
) -> None:
    """These go into step.json and the sidecars: a bad one crashed (or was refused) after the budget."""
    monkeypatch.setenv(name, value)
    before = _snapshot(root)
    result = train(root, "--iters", "2")
    assert result.exit_code == 2, result.stderr
    assert result.stderr == f"Error: {error}\n"
    assert _snapshot(root) == before
    assert not (root / RUN).exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_a_user_error(root: Path) -> None:
    result = train(root, "--device", "cuda", "--iters", "1")
    assert result.exit_code == 2
    assert result.stderr == "Error: --device cuda requested but no CUDA device is available\n"
    assert not (root / RUN).exists()


def test_help_has_an_example() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "--resume selection.json" in result.stdout


def test_a_signal_after_step_json_is_written_still_exits_0(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The graceful handler was removed once step.json was written: a SIGTERM while the outputs were
    # being written killed the process (exit 143) although the session was done and recorded.
    import os
    import signal

    from nanecho_core import github

    written = []

    def outputs_then_signal(values: dict[str, Any]) -> None:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise AssertionError("no graceful SIGTERM handler while the outputs are written")
        os.kill(os.getpid(), signal.SIGTERM)
        written.append(values)

    monkeypatch.setattr(github, "write_outputs", outputs_then_signal)
    result = train(root, "--iters", "3")
    assert result.exit_code == 0, result.stderr
    assert written and written[0]["end_iteration"] == 3
    assert result.stdout.startswith(step(root)["session_id"] + ": iterations 0 -> 3")


def test_a_signal_during_start_up_is_a_graceful_stop_with_no_iterations(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, the handlers were installed only around the loop: a SIGTERM while torch was being
    # imported or the checkpoint loaded killed the process (exit 143) and recorded nothing.
    import os
    import signal

    from nanecho_core.trainer import Trainer

    built = Trainer.__init__

    def build_then_get_signalled(self: Trainer, *args: Any, **kwargs: Any) -> None:
        built(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "__init__", build_then_get_signalled)
    result = train(root, "--iters", "5")
    assert result.exit_code == 0, result.stderr
    record = schema.validate(step(root), "session")
    assert record["stop_reason"] == "signal"
    assert (record["start_iteration"], record["end_iteration"], record["checkpoints"]) == (0, 0, [])
    assert "SIGTERM received" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--until-iter", "-5"], "--until-iter must be >= 0"),
        (
            ["--until-iter", "100000000"],
            "this session would reach iteration 100000000; checkpoint ids hold 8 digits, so a run ends "
            "at iteration 99999999",
        ),
    ],
)
def test_iteration_targets_a_run_cannot_reach_are_refused_before_training(
    root: Path, args: list[str], message: str
) -> None:
    result = train(root, *args)
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")
    assert not (root / "step.json").exists() and not (root / RUN / "cache/checkpoints").exists()


def test_a_path_holding_a_nul_character_is_refused_naming_its_json_path(root: Path) -> None:
    assert train(root, "--iters", "2").exit_code == 0
    entry = step(root)["checkpoints"][-1]
    write_selection(root / "sel.json", entry, Path("a\x00b"))
    result = train(root, "--resume", str(root / "sel.json"), "--iters", "1", out="b.json")
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {root / 'sel.json'}:$.resume_path: does not match the selection schema: 'a\\x00b' should not "
        "be valid under {'pattern': '\\\\u0000'} (schema 0/not)\n",
    )
    config = json.loads((root / "tiny.json").read_text())
    config["data"] = {"corpus": "c\x00.txt"}
    (root / "nul.json").write_text(json.dumps(config))
    result = train(root, "--config", str(root / "nul.json"), "--iters", "1", out="c.json")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: {root / 'nul.json'}:$.data.corpus: does not match the config schema"
    )
    assert not (root / "b.json").exists() and not (root / "c.json").exists()


def test_an_unknown_cpu_engine_is_refused_before_training(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANECHO_CPU_ENGINE", "turbo")
    result = train(root, "--iters", "3")
    message = "Error: NANECHO_CPU_ENGINE must be one of auto, onednn, mm, autograd, not 'turbo'\n"
    assert (result.exit_code, result.stderr) == (2, message)
    assert not (root / "step.json").exists() and not (root / RUN / "cache/checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "detail"),
    [
        (
            ["--max-minutes", "nan"],
            "$.train.max_minutes: does not match the config schema: nan is not of type 'number', 'null' "
            "(schema properties/train/properties/max_minutes/type)",
        ),
        (
            ["--eval-interval", "0"],
            "$.train.eval_interval: does not match the config schema: 0 is less than the minimum of 1 "
            "(schema properties/train/properties/eval_interval/minimum)",
        ),
    ],
)
def test_bad_option_values_are_refused_naming_the_command_line(
    root: Path, args: list[str], detail: str
) -> None:
    result = train(root, *args)
    assert (result.exit_code, result.stderr) == (2, f"Error: command-line options:{detail}\n")
    assert not (root / "step.json").exists()

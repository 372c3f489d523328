"""Hostile-input properties of every tool, run in-process on the real Typer apps.

Each `check_<tool>(kind, data)` builds a fresh run directory with schema-valid documents (torch-free fake
checkpoints from tests/factories.py), replaces ONE document (`kind`) with `data`, invokes the tool and
asserts: exit 0 or 2, never an uncaught exception; on exit 2 exactly one `Error: …` line on stderr and no
file changed; where the oracle says the document is invalid, exit 2. The `*_CASES` strategies pair a kind
with hostile bytes. tests/reliability/test_hostile_input.py and benchmarks/reliability.py drive them.
"""

from __future__ import annotations

import atexit
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from typer.testing import CliRunner

from nanecho_core.fsio import atomic_write_json, dumps_line
from nanecho_core.store import empty_index
from tests.factories import make_entry, make_session, write_fake_checkpoint
from tests.reliability.harness import (
    NOT_STATE,
    RUN,
    RUN_NAME,
    diff_digests,
    git,
    isolated_logging,
    one_error_line,
    scratch_dir,
    tiny_config,
    tree_digest,
)
from tests.reliability.strategies import hostile_bytes, oracle_valid, parse_strict

LEGACY_FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "metadata.json"
NEW_SESSION = "20261124T010000Z-bbbbbb"


@dataclass
class Scenario:
    base: Path
    root: Path
    run_dir: Path
    out: Path
    entries: list[dict[str, Any]]
    step: dict[str, Any]
    metadata: dict[str, Any]
    selection: dict[str, Any]

    @property
    def metadata_path(self) -> Path:
        return self.run_dir / "cache" / "metadata.json"


def build_scenario(base: Path) -> Scenario:
    """A run with two indexed checkpoints, one session, and a third checkpoint a step.json describes."""
    root = base / "root"
    run_dir = root / RUN
    out = base / "out"
    out.mkdir(parents=True)
    first = make_entry("20261124T000000Z-aaaaaa", 100, 2.0)
    second = make_entry("20261124T000000Z-aaaaaa", 200, 1.8, parent_id=first["id"])
    third = make_entry(NEW_SESSION, 300, 1.7, parent_id=second["id"])
    for entry in (first, second, third):
        write_fake_checkpoint(run_dir, entry)
    metadata = empty_index(RUN_NAME)
    metadata.update(checkpoints=[first, second], best_id=second["id"], latest_id=second["id"])
    atomic_write_json(run_dir / "cache" / "metadata.json", metadata)
    done = make_session("20261124T000000Z-aaaaaa", 0, 200, run=RUN_NAME)
    done["checkpoints_written"] = [first["id"], second["id"]]
    (run_dir / "sessions.jsonl").write_text(dumps_line(done) + "\n", encoding="utf-8")
    step = make_session(
        NEW_SESSION,
        200,
        300,
        run=RUN_NAME,
        resumed_from=second["id"],
        resume_source="cache",
        checkpoints=[third],
    )
    selection = {
        "schema_version": 1,
        "run": RUN_NAME,
        "source": "cache",
        "chosen": second,
        "resume_path": str(run_dir / second["file"]),
        "reason": "best val_loss among verified checkpoints",
        "rejected": [],
        "regression": False,
        "allow_fresh": False,
        "metric": "val_loss",
        "mode": "min",
    }
    return Scenario(base, root, run_dir, out, [first, second, third], step, metadata, selection)


_TEMPLATE: Path | None = None


@contextmanager
def scenario() -> Iterator[Scenario]:
    """A fresh copy of the template scenario (built once: its atomic writes fsync, copying does not)."""
    global _TEMPLATE
    if _TEMPLATE is None or not _TEMPLATE.exists():
        _TEMPLATE = scratch_dir("nanecho-fuzz-template-")
        atexit.register(shutil.rmtree, _TEMPLATE, ignore_errors=True)
        build_scenario(_TEMPLATE / "t")
    base = scratch_dir("nanecho-fuzz-")
    try:
        shutil.copytree(_TEMPLATE / "t", base, dirs_exist_ok=True)
        sc = _DOCS
        yield Scenario(
            base,
            base / "root",
            base / "root" / RUN,
            base / "out",
            sc.entries,
            sc.step,
            sc.metadata,
            {**sc.selection, "resume_path": str(base / "root" / RUN / sc.entries[1]["file"])},
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def invoke(app: Any, args: list[str]) -> tuple[int, str, str]:
    """Run a Typer app in-process; an uncaught exception fails the property with its traceback."""
    with isolated_logging():
        result = CliRunner().invoke(app, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"uncaught exception (a traceback for the user):\n{trace}")
    return result.exit_code, result.stdout, result.stderr


def expect(
    code: int,
    stderr: str,
    changes: list[str],
    *,
    must_fail: bool,
    allowed: tuple[str, ...] = (),
    what: str = "",
    report: bool = False,
) -> None:
    """The hostile-input property. `report`: a command whose purpose is listing problems (meta-update
    validate) may print one `Error: …` line per problem."""
    assert code in (0, 2), f"{what}: exit {code}, stderr {stderr[-500:]!r}"
    if must_fail:
        assert code == 2, f"{what}: an invalid document was accepted (exit 0)"
    if code == 2:
        problem = one_error_line(stderr)
        if report and problem and "Traceback" not in stderr:
            lines = [line for line in stderr.splitlines() if line.strip()]
            problem = None if all(line.startswith("Error: ") for line in lines) else problem
        assert problem is None, f"{what}: {problem}"
        assert not changes, f"{what}: exit 2 but files changed: {changes}"
    else:
        unexpected = [c for c in changes if c[1:] not in allowed]
        assert not unexpected, f"{what}: unexpected changes {unexpected}"


def doc_strategy(valid_by_kind: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, hostile bytes) pairs, each kind's bytes mutated from its valid document."""
    return st.one_of(
        *(hostile_bytes(doc).map(lambda b, k=kind: (k, b)) for kind, doc in valid_by_kind.items())
    )


def _valid_docs() -> Scenario:
    base = scratch_dir("nanecho-fuzz-docs-")
    try:
        return build_scenario(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


_DOCS = _valid_docs()
_LEGACY = json.loads(LEGACY_FIXTURE.read_text("utf-8"))
_SESSION_LINE = make_session("20261124T000500Z-cccccc", 200, 250, run=RUN_NAME)

CKPT_SELECT_CASES = doc_strategy(
    {"metadata": _DOCS.metadata, "config": tiny_config(), "sidecar": _DOCS.entries[2]}
)
TRAIN_STEP_CASES = doc_strategy({"selection": _DOCS.selection, "config": tiny_config()})
META_UPDATE_CASES = st.tuples(
    doc_strategy({"metadata": _DOCS.metadata, "step": _DOCS.step, "legacy": _LEGACY}),
    st.sampled_from(
        ("list", "show", "validate", "tag", "note", "set", "remove", "mark-missing", "prune", "record")
    ),
)
PROGRESS_COMMIT_CASES = doc_strategy({"step": _DOCS.step})
SUMMARIZE_CASES = doc_strategy({"metadata": _DOCS.metadata, "sessions": _SESSION_LINE})


def _config_valid(data: bytes) -> bool:
    if not oracle_valid(data, "config"):
        return False
    model = {**tiny_config()["model"], **(parse_strict(data)[1].get("model") or {})}
    return model["n_embd"] % model["n_head"] == 0


def check_ckpt_select(kind: str, data: bytes) -> None:
    from nanecho_tools.ckpt_select import app

    with scenario() as sc:
        args = ["--root", str(sc.root), "--run", RUN, "--out", str(sc.out / "selection.json")]
        if kind == "metadata":
            sc.metadata_path.write_bytes(data)
            must_fail = not oracle_valid(data, "metadata")
        elif kind == "config":
            (sc.out / "config.json").write_bytes(data)
            args += ["--config", str(sc.out / "config.json")]
            must_fail = not _config_valid(data)
        else:  # an unindexed checkpoint's sidecar: a bad one is a rejected candidate, not an error
            (sc.run_dir / sc.entries[2]["file"]).with_suffix(".json").write_bytes(data)
            must_fail = False
        before = tree_digest(sc.base)
        code, _out, err = invoke(app, args)
        changes = diff_digests(before, tree_digest(sc.base))
        expect(
            code,
            err,
            changes,
            must_fail=must_fail,
            allowed=("out/selection.json",),
            what=f"ckpt-select {kind}",
        )
        if code == 0:
            assert oracle_valid((sc.out / "selection.json").read_bytes(), "selection"), (
                "invalid selection.json"
            )


def check_train_step(kind: str, data: bytes) -> bool:
    """Only documents that must be refused are tried (a valid one would start training): returns
    whether the case was run."""
    from nanecho_tools.train_step import app

    if kind == "config" and _config_valid(data):
        return False
    if kind == "selection":
        ok, doc = parse_strict(data)
        if oracle_valid(data, "selection") and doc.get("source") == "fresh":
            return False
    with scenario() as sc:
        # The valid selection names the template's checkpoint: point it at this copy's (fake) one.
        data = data.replace(str(_DOCS.base).encode(), str(sc.base).encode())
        corpus = sc.out / "corpus.txt"
        corpus.write_bytes(b"To be, or not to be: that is the question.\n" * 50)
        args = ["--root", str(sc.root), "--run", RUN, "--iters", "1", "--device", "cpu"]
        args += ["--corpus", str(corpus), "--out", str(sc.out / "step.json")]
        if kind == "selection":
            (sc.out / "selection.json").write_bytes(data)
            args += ["--resume", str(sc.out / "selection.json")]
        else:
            (sc.out / "config.json").write_bytes(data)
            args += ["--config", str(sc.out / "config.json")]
        before = tree_digest(sc.base)
        code, _out, err = invoke(app, args)
        changes = diff_digests(before, tree_digest(sc.base))
        expect(code, err, changes, must_fail=True, what=f"train-step {kind}")
    return True


def _meta_args(sc: Scenario, sub: str) -> list[str]:
    first = sc.entries[0]["id"]
    extra = {
        "show": [first],
        "tag": [first, "fuzzed"],
        "note": [first, "a note"],
        "set": [first, "status", "corrupt"],
        "remove": [first],
        "prune": ["--keep-best", "1", "--keep-last", "1", "--dry-run"],
        "record": [str(sc.out / "step.json")],
    }.get(sub, [])
    return [sub, *extra, "--root", str(sc.root), "--run", RUN]


def check_meta_update(case: tuple[tuple[str, bytes], str]) -> None:
    from nanecho_tools.meta_update import app

    (kind, data), sub = case
    with scenario() as sc:
        atomic_write_json(sc.out / "step.json", sc.step)
        if kind == "metadata":
            sc.metadata_path.write_bytes(data)
            must_fail = not oracle_valid(data, "metadata")
            args = _meta_args(sc, sub)
        elif kind == "step":
            (sc.out / "step.json").write_bytes(data)
            must_fail = not oracle_valid(data, "session")
            args = _meta_args(sc, "record")
        else:
            (sc.out / "legacy.json").write_bytes(data)
            must_fail = not oracle_valid(data, "legacy_metadata")
            args = ["import-legacy", str(sc.out / "legacy.json"), "--root", str(sc.root), "--run", RUN]
        before = tree_digest(sc.base)
        code, _out, err = invoke(app, args)
        changes = diff_digests(before, tree_digest(sc.base))
        written = [c[1:] for c in changes if c[0] != "-"]
        what = f"meta-update {args[0]} {kind}"
        report = args[0] == "validate"
        expect(code, err, changes, must_fail=must_fail, allowed=tuple(written), what=what, report=report)
        if code == 0 and sc.metadata_path.exists() and any("metadata.json" in c for c in changes):
            assert oracle_valid(sc.metadata_path.read_bytes(), "metadata"), (
                "meta-update wrote an invalid index"
            )


class CommitRepo:
    """One git repo with uncommitted progress, shared by the examples of a progress-commit property
    (a refused document changes nothing, so examples cannot leak into each other unless a bug does)."""

    def __init__(self) -> None:
        self.sc = build_scenario(scratch_dir("nanecho-fuzz-commit-"))
        root = self.sc.root
        git(root, "init", "-q", "-b", "main")
        (root / "README.md").write_text("fuzz\n")
        git(root, "add", "README.md")
        git(
            root,
            "-c",
            "user.name=seed",
            "-c",
            "user.email=seed@example.invalid",
            "commit",
            "-q",
            "-m",
            "seed",
        )

    def state(self) -> tuple[dict[str, str], str, str]:
        root = self.sc.root
        head = git(root, "rev-parse", "HEAD")
        status = git(root, "status", "--porcelain", "--untracked-files=all")
        return tree_digest(self.sc.base, skip=(*NOT_STATE, "index.lock")), head, status

    def close(self) -> None:
        shutil.rmtree(self.sc.base, ignore_errors=True)


def check_progress_commit(repo: CommitRepo, kind: str, data: bytes) -> bool:
    from nanecho_tools.progress_commit import app

    if oracle_valid(data, "session"):
        return False  # a valid step.json would be committed; the property is about refusals
    sc = repo.sc
    (sc.out / "step.json").write_bytes(data)
    before = repo.state()
    args = ["--root", str(sc.root), "--run", RUN, "--message-from", str(sc.out / "step.json")]
    code, _out, err = invoke(app, [*args, "--out", str(sc.out / "commit-result.json")])
    after = repo.state()
    changes = diff_digests(before[0], after[0])
    changes = [c for c in changes if not c[1:].startswith("root/.git/")]
    if before[1:] != after[1:]:
        changes.append("~git HEAD or status")
    expect(code, err, changes, must_fail=True, what=f"progress-commit {kind}")
    return True


def check_summarize(kind: str, data: bytes) -> None:
    from nanecho_tools.summarize import app

    with scenario() as sc:
        if kind == "metadata":
            sc.metadata_path.write_bytes(data)
            must_fail = not oracle_valid(data, "metadata")
        else:  # a middle line of sessions.jsonl (a torn LAST line is tolerated by design)
            good = dumps_line(make_session("20261124T001000Z-dddddd", 250, 260, run=RUN_NAME))
            line = data.replace(b"\n", b" ")
            with (sc.run_dir / "sessions.jsonl").open("ab") as handle:
                handle.write(line + b"\n" + good.encode() + b"\n")
            blank = not line.strip(b" \t\r")  # JSON's whitespace, not Python's (\x1c is not blank)
            must_fail = False if blank else not oracle_valid(line, "session")
        before = tree_digest(sc.base)
        code, _out, err = invoke(app, ["--root", str(sc.root), "--run", RUN, "--format", "json"])
        changes = diff_digests(before, tree_digest(sc.base))
        written = tuple(c[1:] for c in changes if c[0] != "-")
        derived = tuple(w for w in written if w.endswith(("training_summary.json", "PROGRESS.md")))
        expect(code, err, changes, must_fail=must_fail, allowed=derived, what=f"summarize {kind}")


TOOL_CHECKS: dict[str, Callable[..., Any]] = {
    "ckpt-select": check_ckpt_select,
    "train-step": check_train_step,
    "meta-update": check_meta_update,
    "progress-commit": check_progress_commit,
    "summarize": check_summarize,
}

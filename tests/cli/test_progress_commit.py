from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanecho_core.store import empty_index, run_paths, save_metadata
from nanecho_tools.progress_commit import app
from tests.factories import make_entry
from tests.gitfixtures import (
    README,
    RUN,
    clone,
    git,
    isolated_git_env,
    make_remote,
    record_direct,
    remote_file,
    step_doc,
    tree_snapshot,
    write_step,
)

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in isolated_git_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    return tmp_path


@pytest.fixture
def remote(env: Path) -> Path:
    return make_remote(env)


@pytest.fixture
def work(remote: Path, env: Path) -> Path:
    return clone(remote, env / "work")


def _commit(work: Path, tmp: Path, *extra: str) -> tuple[int, str, str, dict | None]:
    out = tmp / "commit-result.json"
    out.unlink(missing_ok=True)
    result = runner.invoke(
        app, ["--root", str(work), "--run", RUN, "--out", str(out), "--backoff", "0.01", *extra]
    )
    doc = json.loads(out.read_text()) if out.exists() else None
    return result.exit_code, result.stdout, result.stderr, doc


def _repo_state(work: Path) -> tuple[str, str, dict[str, bytes], bytes]:
    """HEAD, index, work tree and local git config: all that a refused run must leave as it was."""
    return (
        git(work, "rev-parse", "HEAD"),
        git(work, "ls-files", "--stage"),
        tree_snapshot(work),
        (work / ".git/config").read_bytes(),
    )


def _session(work: Path, tmp: Path, writer: int, number: int) -> Path:
    step = step_doc(writer, number)
    record_direct(work, step)
    return write_step(tmp / f"step-{writer}-{number}.json", step)


def test_commit_contains_only_the_runs_small_files_under_the_bot_identity(work: Path, env: Path) -> None:
    step = _session(work, env, 1, 1)
    (work / RUN / "cache/checkpoints").mkdir(parents=True)
    (work / RUN / "cache/checkpoints/ckpt.pt").write_bytes(b"w" * 10)
    (work / "unrelated.txt").write_text("not ours")
    code, stdout, stderr, doc = _commit(work, env, "--message-from", str(step))
    assert code == 0, stderr
    assert doc is not None and doc["status"] == "committed" and doc["pushed"] is False
    assert doc["files"] == [
        ".training-progress/.gitattributes",
        ".training-progress/.gitignore",
        f"{RUN}/sessions.jsonl",
    ]
    assert git(work, "show", "--name-only", "--format=", "HEAD").splitlines() == doc["files"]
    assert git(work, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "nanecho-bot <nanecho-bot@users.noreply.github.com>|nanecho-bot <nanecho-bot@users.noreply.github.com>"
    )
    assert git(work, "config", "--get", "user.name", check=False) == ""  # identity never written to config
    assert stdout == f"committed {doc['sha']} {doc['subject']}\n"
    assert stderr == "committed locally (no --push)\n"
    assert git(work, "status", "--porcelain") == "?? unrelated.txt"
    assert git(work, "config", "merge.nanecho-metadata.driver") == "meta-update merge-driver %O %A %B"


def test_nothing_to_commit_exits_3_and_makes_no_empty_commit(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    assert _commit(work, env)[0] == 0
    head = git(work, "rev-parse", "HEAD")
    code, stdout, stderr, doc = _commit(work, env)
    assert code == 3
    assert stdout == ""
    assert stderr == "nothing to commit: the run's progress files match the last commit (exit 3)\n"
    assert doc is not None and doc["status"] == "nothing" and doc["sha"] == head and doc["files"] == []
    assert git(work, "rev-parse", "HEAD") == head


def test_push_lands_and_result_records_sha_attempts_and_remote_ref(
    work: Path, env: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = env / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    step = _session(work, env, 1, 1)
    code, stdout, stderr, doc = _commit(work, env, "--message-from", str(step), "--push")
    assert code == 0, stderr
    assert doc is not None
    assert (doc["status"], doc["pushed"], doc["attempts"]) == ("pushed", True, 1)
    assert (doc["branch"], doc["remote_ref"], doc["remote"]) == (
        "main",
        "refs/heads/main",
        f"origin ({remote})",
    )
    assert git(remote, "rev-parse", "main") == doc["sha"]
    assert outputs.read_text() == f"sha={doc['sha']}\npushed=true\nattempts=1\n"
    assert (
        json.loads(remote_file(remote, f"{RUN}/sessions.jsonl"))["session_id"] == step_doc(1, 1)["session_id"]
    )


def test_rejected_push_rebases_onto_the_remote_and_keeps_both_sessions(
    work: Path, env: Path, remote: Path
) -> None:
    other = clone(remote, env / "other")
    _session(other, env, 2, 1)
    assert _commit(other, env, "--push")[0] == 0
    step = _session(work, env, 1, 1)  # work is now behind: its first push is rejected
    code, _, stderr, doc = _commit(work, env, "--message-from", str(step), "--push")
    assert code == 0, stderr
    assert doc is not None and doc["attempts"] == 2 and doc["pushed"] is True
    ids = [
        json.loads(line)["session_id"] for line in remote_file(remote, f"{RUN}/sessions.jsonl").splitlines()
    ]
    assert ids == [step_doc(2, 1)["session_id"], step_doc(1, 1)["session_id"]]
    assert git(remote, "rev-list", "--merges", "--count", "main") == "0"  # linear history
    assert git(remote, "log", "-1", "--format=%s", "main").startswith(
        f"nanecho(nanecho-cached-ci): session {ids[1]}"
    )


def test_pull_request_commits_locally_but_never_pushes(
    work: Path, env: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    _session(work, env, 1, 1)
    before = git(remote, "rev-parse", "main")
    code, _, stderr, doc = _commit(work, env, "--push")
    assert code == 0
    assert stderr == "pull_request event: committed locally, not pushing (pull requests never push)\n"
    assert doc is not None and (doc["status"], doc["pushed"], doc["attempts"]) == ("committed", False, 0)
    assert git(remote, "rev-parse", "main") == before


def test_staged_weight_is_refused_and_nothing_is_committed(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    weight = work / RUN / "cache/checkpoints/ckpt.safetensors"
    weight.parent.mkdir(parents=True)
    weight.write_bytes(b"w")
    git(work, "add", "-f", weight.relative_to(work).as_posix())
    before = _repo_state(work)
    code, stdout, stderr, doc = _commit(work, env)
    assert code == 2 and stdout == "" and doc is None
    assert stderr.startswith(f"Error: {weight}: refusing to commit model weights")
    assert stderr.count("\n") == 1
    assert _repo_state(work) == before  # not even .gitattributes, .gitignore or the merge drivers


def test_metadata_over_the_size_cap_is_refused(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    paths = run_paths(work, RUN)
    index = empty_index(paths.name)
    index["checkpoints"] = [make_entry(iteration=100 * (i + 1), val_loss=2.0) for i in range(5)]
    save_metadata(paths, index)
    size = paths.metadata.stat().st_size
    assert size > 4096
    before = _repo_state(work)
    code, _, stderr, _ = _commit(work, env, "--max-bytes", "4096")
    assert code == 2
    assert stderr == (
        f"Error: {paths.metadata}: file is {size} bytes, over the 4096-byte cap (meta-update compact shrinks the index)\n"
    )
    assert _repo_state(work) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ('{"schema_version": 1}', "does not match the session schema"),
    ],
)
def test_bad_step_json_is_one_error_line_and_changes_nothing(
    work: Path, env: Path, content: str, message: str
) -> None:
    _session(work, env, 1, 1)
    step = env / "step.json"
    step.write_text(content)
    before = tree_snapshot(work)
    code, _, stderr, doc = _commit(work, env, "--message-from", str(step))
    assert code == 2 and doc is None
    assert stderr.startswith(f"Error: {step}") and message in stderr and stderr.count("\n") == 1
    assert tree_snapshot(work) == before


def test_step_json_of_another_run_is_refused(work: Path, env: Path) -> None:
    step = step_doc(1, 1)
    step["run"] = "other-run"
    (work / RUN).mkdir(parents=True)
    path = write_step(env / "step.json", step)
    code, _, stderr, _ = _commit(work, env, "--message-from", str(path))
    assert code == 2
    assert stderr == f"Error: {path}:$.run: session is for run 'other-run', not 'nanecho-cached-ci'\n"


def test_run_directory_outside_the_root_is_refused(work: Path, env: Path) -> None:
    result = runner.invoke(app, ["--root", str(work), "--run", "../elsewhere", "--out", str(env / "r.json")])
    assert result.exit_code == 2
    assert result.stderr == "Error: run directory '../elsewhere' escapes " + str(work) + " (contains '..')\n"


@pytest.mark.parametrize("given", ["{env}/elsewhere.md", "../elsewhere.md"])
def test_readme_outside_the_repository_is_refused(work: Path, env: Path, given: str) -> None:
    _session(work, env, 1, 1)
    (env / "elsewhere.md").write_text(README)
    readme = given.format(env=env)
    before = _repo_state(work)
    code, _, stderr, doc = _commit(work, env, "--readme", readme)
    assert code == 2 and doc is None
    assert stderr == f"Error: {work / readme}: README must be inside the repository root\n"
    assert _repo_state(work) == before


def test_readme_that_is_not_utf8_is_refused(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    readme = work / "README.md"
    readme.write_bytes(README.replace("no sessions yet", "1 session").encode() + b"\xff\n")
    before = _repo_state(work)
    code, _, stderr, doc = _commit(work, env, "--readme", "README.md")
    assert code == 2 and doc is None
    assert stderr == f"Error: {readme}: not UTF-8 text\n"
    assert _repo_state(work) == before


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (".gitignore", Path.mkdir, "is a directory, expected a file"),
        (".gitattributes", lambda path: path.write_bytes(b"\xff\n"), "not UTF-8 text"),
    ],
)
def test_progress_files_that_cannot_be_read_are_refused_and_neither_is_written(
    work: Path, env: Path, name: str, make: Callable[[Path], object], message: str
) -> None:
    _session(work, env, 1, 1)
    broken = work / ".training-progress" / name
    make(broken)
    before = _repo_state(work)
    code, _, stderr, doc = _commit(work, env)
    assert code == 2 and doc is None
    assert stderr == f"Error: {broken}: {message}\n"
    assert _repo_state(work) == before


def test_readme_progress_block_is_committed_but_other_edits_are_refused(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    readme = work / "README.md"
    readme.write_text(README.replace("Intro text.", "Rewritten intro."))
    code, _, stderr, _ = _commit(work, env, "--readme", "README.md")
    assert code == 2
    assert (
        stderr == f"Error: {readme}: README has changes outside the progress block; commit those yourself\n"
    )
    readme.write_text(README.replace("no sessions yet", "1 session, best val 2.490"))
    code, _, stderr, doc = _commit(work, env, "--readme", "README.md")
    assert code == 0, stderr
    assert doc is not None and "README.md" in doc["files"]


def test_detached_head_needs_a_branch_to_push_and_nothing_is_committed(work: Path, env: Path) -> None:
    git(work, "checkout", "--quiet", "--detach")
    _session(work, env, 1, 1)
    before = _repo_state(work)
    code, _, stderr, doc = _commit(work, env, "--push")
    assert code == 2 and doc is None
    assert (
        stderr == f"Error: {work}: detached HEAD and no --branch: pass --branch to name the branch to push\n"
    )
    assert _repo_state(work) == before


@pytest.mark.parametrize("branch", ["bad..name", "-f"])
def test_invalid_branch_name_is_refused_before_committing(
    work: Path, env: Path, remote: Path, branch: str
) -> None:
    _session(work, env, 1, 1)
    before, before_remote = _repo_state(work), git(remote, "rev-parse", "main")
    code, _, stderr, doc = _commit(work, env, "--push", f"--branch={branch}")
    assert code == 2 and doc is None
    assert stderr == f"Error: {work}: {branch!r} is not a valid branch name (git check-ref-format)\n"
    assert _repo_state(work) == before
    assert git(remote, "rev-parse", "main") == before_remote
    assert not list(env.glob("*.bundle"))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--backoff", "nan"], "--backoff must be a finite number of seconds, 0 or more"),
        (["--backoff", "inf"], "--backoff must be a finite number of seconds, 0 or more"),
        (["--backoff", "-1"], "--backoff must be a finite number of seconds, 0 or more"),
        (["--retries", "-1"], "--retries must be 0 or more"),
        (["--max-bytes", "-1"], "--max-bytes must be 1 or more"),
        (["--max-bytes", "0"], "--max-bytes must be 1 or more"),
    ],
)
def test_bad_numeric_options_are_refused_before_anything_is_written(
    work: Path, env: Path, remote: Path, option: list[str], message: str
) -> None:
    other = clone(remote, env / "other")
    _session(other, env, 2, 1)
    assert _commit(other, env, "--push")[0] == 0  # the remote moved ahead: a push would back off
    _session(work, env, 1, 1)
    before = _repo_state(work)
    code, stdout, stderr, doc = _commit(work, env, "--push", *option)
    assert (code, stdout, doc) == (2, "", None)
    assert stderr == f"Error: {message}\n"
    assert _repo_state(work) == before


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (".", "--out is a directory, expected a file"),
        ("README.md/x", "--out cannot be written: {work}/README.md is not a directory"),
    ],
)
def test_unwritable_out_is_refused_before_committing(work: Path, env: Path, out: str, message: str) -> None:
    _session(work, env, 1, 1)
    target = work / out
    before = _repo_state(work)
    code, _, stderr, _ = _commit(work, env, "--out", str(target))
    assert code == 2
    assert stderr == f"Error: {target}: {message.format(work=work)}\n"
    assert _repo_state(work) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_out_in_a_read_only_directory_is_refused_before_committing(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    locked = env / "locked"
    locked.mkdir(mode=0o555)
    before = _repo_state(work)
    code, _, stderr, _ = _commit(work, env, "--out", str(locked / "commit-result.json"))
    assert code == 2
    assert (
        stderr
        == f"Error: {locked / 'commit-result.json'}: --out cannot be written: {locked} is not writable\n"
    )
    assert _repo_state(work) == before


def test_bundle_dir_that_is_a_file_is_refused_before_committing(work: Path, env: Path, remote: Path) -> None:
    _session(work, env, 1, 1)
    readme = work / "README.md"
    before = _repo_state(work)
    code, _, stderr, doc = _commit(work, env, "--push", "--bundle-dir", str(readme))
    assert code == 2 and doc is None
    assert stderr == f"Error: {readme}: --bundle-dir cannot be written: {readme} is not a directory\n"
    assert _repo_state(work) == before


def test_missing_remote_repository_fails_at_once_and_says_so(work: Path, env: Path) -> None:
    missing = env / "nonexistent.git"
    git(work, "remote", "set-url", "origin", str(missing))
    _session(work, env, 1, 1)
    code, _, stderr, doc = _commit(work, env, "--push")
    assert code == 2 and doc is not None
    reason = f"no such repository: fatal: '{missing}' does not appear to be a git repository"
    assert (doc["status"], doc["attempts"], doc["reason"]) == ("failed", 1, reason)  # never retried
    bundle = env / f"nanecho-unpushed-{doc['sha'][:12]}.bundle"
    assert stderr == (
        f"Error: origin ({missing}): push failed after 1 attempt(s): {reason}; "
        f"commit {doc['sha'][:12]} kept locally and saved to {bundle} (recover: git pull {bundle} HEAD)\n"
    )


def test_unknown_remote_is_named(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    code, _, stderr, _ = _commit(work, env, "--push", "--remote", "upstream")
    assert code == 2
    assert stderr == f"Error: {work}: no git remote named 'upstream' (git remote -v lists them)\n"


def test_derived_files_are_regenerated_after_a_rebase_not_merged(work: Path, env: Path, remote: Path) -> None:
    from nanecho_core.summary import regenerate

    other = clone(remote, env / "other")
    _session(other, env, 2, 1)
    regenerate(other, [run_paths(other, RUN)])
    assert _commit(other, env, "--push")[0] == 0
    _session(work, env, 1, 1)
    regenerate(work, [run_paths(work, RUN)])  # knows only its own session: stale after the rebase
    code, _, stderr, doc = _commit(work, env, "--push")
    assert code == 0, stderr
    assert doc is not None and doc["attempts"] == 2
    assert git(work, "status", "--porcelain") == ""
    fresh = clone(remote, env / "fresh")
    derived = [f"{RUN}/training_summary.json", ".training-progress/PROGRESS.md"]
    pushed = {rel: remote_file(remote, rel) for rel in derived}
    regenerate(fresh, [run_paths(fresh, RUN)])
    assert {rel: (fresh / rel).read_text().rstrip("\n") for rel in derived} == pushed
    upstream_copy = git(work, "show", f"{doc['sha']}~1:{RUN}/training_summary.json")
    assert json.loads(pushed[f"{RUN}/training_summary.json"]) != json.loads(upstream_copy)


def test_detached_checkout_pushes_to_the_branch_named_by_github_ref(
    work: Path, env: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")
    git(work, "checkout", "--quiet", "--detach")
    _session(work, env, 1, 1)
    code, _, stderr, doc = _commit(work, env, "--push")
    assert code == 0, stderr
    assert doc is not None and doc["branch"] == "main" and git(remote, "rev-parse", "main") == doc["sha"]


def test_json_flag_prints_the_result_document(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    code, stdout, _, doc = _commit(work, env, "--json")
    assert code == 0
    assert json.loads(stdout) == doc


def test_an_out_naming_the_runs_index_is_refused_before_committing(work: Path, env: Path) -> None:
    _session(work, env, 1, 1)
    before = _repo_state(work)
    index = work / RUN / "cache" / "metadata.json"
    result = runner.invoke(app, ["--root", str(work), "--run", RUN, "--out", str(index), "--push"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {index}: --out names a file that run {Path(RUN).name} keeps; write it elsewhere\n"
    )
    assert _repo_state(work) == before


@pytest.mark.parametrize("variable", ["GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"])
def test_an_identity_git_cannot_commit_with_is_refused_before_staging(
    work: Path, env: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Before, `git commit` failed after the files were staged and the merge drivers configured.
    _session(work, env, 1, 1)
    before = _repo_state(work)
    monkeypatch.setenv(variable, "garbage")
    code, _, stderr, doc = _commit(work, env, "--push")
    assert code == 2 and doc is None
    assert stderr == f"Error: {work}: git cannot make a commit here: fatal: invalid date format: garbage\n"
    assert _repo_state(work) == before


def test_a_branch_from_github_ref_that_is_not_utf8_is_refused_before_pushing(
    work: Path, env: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It pushed refs/heads/\xff to the remote, then crashed decoding git's output (UnicodeDecodeError).
    git(work, "checkout", "--quiet", "--detach")
    _session(work, env, 1, 1)
    before, heads = _repo_state(work), git(remote, "for-each-ref", "--format=%(refname)")
    monkeypatch.setenv("GITHUB_REF", "refs/heads/\udcff")
    code, _, stderr, doc = _commit(work, env, "--push")
    assert code == 2 and doc is None
    assert stderr == f"Error: {work}: '\\udcff' is not a valid branch name (git check-ref-format)\n"
    assert _repo_state(work) == before
    assert git(remote, "for-each-ref", "--format=%(refname)") == heads

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nanecho_core import gitops, gitpush
from nanecho_core.errors import NanechoError
from nanecho_core.gitops import Git, GitResult
from nanecho_core.store import run_paths
from tests.gitfixtures import README, RUN, SEED_IDENTITY, git, isolated_git_env


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work tree with one commit (README) and no git identity configured anywhere."""
    for name, value in isolated_git_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "work"
    git(tmp_path, "init", "--quiet", "-b", "main", str(root))
    (root / "README.md").write_text(README)
    git(root, "add", "README.md")
    git(root, *SEED_IDENTITY, "commit", "--quiet", "-m", "initial")
    (root / RUN).mkdir(parents=True)
    return root


def _result(stdout: str = "", stderr: str = "", code: int = 1) -> GitResult:
    return GitResult(("push",), code, stdout, stderr)


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (" ! [rejected]        HEAD -> main (fetch first)\nerror: failed to push some refs", gitpush.RACE),
        (" ! [rejected]        HEAD -> main (non-fast-forward)", gitpush.RACE),
        (
            " ! [remote rejected] HEAD -> main (cannot lock ref 'refs/heads/main': is at 1 but expected 2)",
            gitpush.RACE,
        ),
        (" ! [remote rejected] HEAD -> main (pre-receive hook declined)", gitpush.NO_RIGHTS),
        (
            "remote: Permission to o/r.git denied to bot.\nfatal: unable to access 'https://github.com/o/r.git/': "
            "The requested URL returned error: 403",
            gitpush.NO_RIGHTS,
        ),
        (
            "fatal: unable to access 'https://127.0.0.1:1/r.git/': Failed to connect to 127.0.0.1 port 1",
            gitpush.NETWORK,
        ),
        ("fatal: Could not resolve host: github.invalid", gitpush.NETWORK),
        (
            "fatal: '/nonexistent.git' does not appear to be a git repository\n"
            "fatal: Could not read from remote repository.\n\n"
            "Please make sure you have the correct access rights\nand the repository exists.",
            gitpush.NO_REPO,
        ),
        (
            "remote: Repository not found.\nfatal: repository 'https://github.com/o/missing.git/' not found",
            gitpush.NO_REPO,
        ),
        ("error: src refspec nope does not match any", gitpush.OTHER),
    ],
)
def test_push_failures_are_classified_by_what_git_said(stderr: str, kind: str) -> None:
    assert gitpush.classify(_result(stderr=stderr)) == kind


def test_git_output_is_redacted_before_anyone_sees_it() -> None:
    result = _result(stderr="fatal: unable to access 'https://x-access-token:CANARY123@github.com/o/r.git/'")
    assert "CANARY123" not in result.output
    assert "https://***@github.com/o/r.git/" in result.output


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        (
            "fatal: '/nonexistent.git' does not appear to be a git repository\n"
            "fatal: Could not read from remote repository.\n\n"
            "Please make sure you have the correct access rights\nand the repository exists.",
            "fatal: '/nonexistent.git' does not appear to be a git repository",
        ),
        (
            "remote: Repository not found.\n"
            "fatal: repository 'https://x-access-token:CANARY123@github.com/o/missing.git/' not found",
            "fatal: repository 'https://***@github.com/o/missing.git/' not found",
        ),
    ],
)
def test_the_line_that_says_why_skips_git_boilerplate_and_credentials(stderr: str, line: str) -> None:
    assert gitpush.last_line(_result(stderr=stderr)) == line


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt, high in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)):  # base 1 s: capped at 30 s
        delays = [gitpush.backoff_delay(attempt, 1.0) for _ in range(200)]
        assert min(delays) >= 0.5 and max(delays) <= high
        assert len(set(delays)) > 150  # jittered, so concurrent writers do not retry in lockstep
    assert gitpush.backoff_delay(3, 0.0) == 0.0
    assert max(gitpush.backoff_delay(20, 0.05) for _ in range(200)) <= 1.6  # small bases cap at 32x


def test_bot_identity_fills_only_what_git_lacks(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gitops.identity_env(Git(repo)) == {
        "GIT_AUTHOR_NAME": "nanecho-bot",
        "GIT_AUTHOR_EMAIL": "nanecho-bot@users.noreply.github.com",
        "GIT_COMMITTER_NAME": "nanecho-bot",
        "GIT_COMMITTER_EMAIL": "nanecho-bot@users.noreply.github.com",
    }
    monkeypatch.setenv("NANECHO_GIT_NAME", "env-bot")
    assert gitops.identity_env(Git(repo), email="flag@bot")["GIT_AUTHOR_NAME"] == "env-bot"
    assert gitops.identity_env(Git(repo), "flag-bot", "flag@bot")["GIT_COMMITTER_EMAIL"] == "flag@bot"


def test_a_configured_identity_is_never_rewritten(repo: Path) -> None:
    git(repo, "config", "user.name", "Ada")
    git(repo, "config", "user.email", "ada@example.com")
    assert gitops.identity_env(Git(repo), "flag-bot", "flag@bot") == {}
    assert git(repo, "config", "user.name") == "Ada"


def test_progress_files_are_created_then_completed_without_duplicates(repo: Path) -> None:
    attributes = repo / ".training-progress/.gitattributes"
    changed = gitops.ensure_progress_files(repo)
    assert changed == [attributes, repo / ".training-progress/.gitignore"]
    assert attributes.read_text() == "\n".join(gitops.GITATTRIBUTES_LINES) + "\n"
    attributes.write_text("# mine\n*/sessions.jsonl merge=union")  # user-edited, no trailing newline
    assert gitops.ensure_progress_files(repo) == [attributes]
    lines = attributes.read_text().splitlines()
    assert lines[:2] == ["# mine", "*/sessions.jsonl merge=union"]
    assert sorted(lines[2:]) == sorted(set(gitops.GITATTRIBUTES_LINES) - {"*/sessions.jsonl merge=union"})
    assert gitops.ensure_progress_files(repo) == []


def test_merge_drivers_are_installed_once_and_custom_ones_kept(repo: Path) -> None:
    git(repo, "config", "merge.nanecho-derived.driver", "my-own-driver %A")
    installed = gitops.install_merge_drivers(Git(repo))
    assert "merge.nanecho-derived.driver" not in installed
    assert git(repo, "config", "merge.nanecho-metadata.driver") == "meta-update merge-driver %O %A %B"
    assert git(repo, "config", "merge.nanecho-derived.driver") == "my-own-driver %A"
    assert gitops.install_merge_drivers(Git(repo)) == []


def test_readme_may_be_committed_only_when_just_its_progress_block_changed(repo: Path) -> None:
    readme = repo / "README.md"
    readme.write_text(README.replace("no sessions yet", "| session | val |\n| a | 2.0 |"))
    assert gitops.readme_is_progress_only(Git(repo), readme)
    readme.write_text(README.replace("Intro text.", "Edited intro."))
    with pytest.raises(NanechoError, match="changes outside the progress block"):
        gitops.readme_is_progress_only(Git(repo), readme)


def test_staged_weights_under_the_run_are_refused(repo: Path) -> None:
    paths = run_paths(repo, RUN)
    weight = paths.dir / "cache/checkpoints/ckpt.pt"
    weight.parent.mkdir(parents=True)
    weight.write_bytes(b"weights")
    gitops.ensure_progress_files(repo)
    allowed = gitops.allowed_files(paths, None)
    gitops.check_run_dir(Git(repo), paths, allowed, 1024)  # ignored by .gitignore: fine
    git(repo, "add", "-f", weight.relative_to(repo).as_posix())
    with pytest.raises(NanechoError, match="refusing to commit model weights") as caught:
        gitops.check_run_dir(Git(repo), paths, allowed, 1024)
    assert caught.value.path == str(weight)


def test_files_over_the_size_cap_are_refused(repo: Path) -> None:
    paths = run_paths(repo, RUN)
    paths.sessions.write_text("x" * 2048)
    with pytest.raises(NanechoError, match="2048 bytes, over the 1024-byte cap"):
        gitops.check_run_dir(Git(repo), paths, gitops.allowed_files(paths, None), 1024)
    (paths.dir / "notes.log").write_text("y" * 4096)  # untracked, not ignored: git would pick it up
    paths.sessions.write_text("small\n")
    with pytest.raises(NanechoError, match="notes.log: file is 4096 bytes"):
        gitops.check_run_dir(Git(repo), paths, gitops.allowed_files(paths, None), 1024)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (".gitignore", Path.mkdir, "is a directory, expected a file"),
        (".gitattributes", lambda path: path.write_bytes(b"\xff\n"), "not UTF-8 text"),
    ],
)
def test_an_unreadable_progress_file_leaves_both_as_they_were(
    repo: Path, name: str, make: Callable[[Path], object], message: str
) -> None:
    progress = repo / ".training-progress"
    make(progress / name)
    with pytest.raises(NanechoError, match=message) as caught:
        gitops.ensure_progress_files(repo)
    assert caught.value.path == str(progress / name)
    assert sorted(p.name for p in progress.iterdir()) == sorted([name, "nanecho-cached-ci"])


def test_untracked_weights_are_not_refused_before_the_gitignore_exists(repo: Path) -> None:
    paths = run_paths(repo, RUN)
    (paths.dir / "cache/checkpoints").mkdir(parents=True)
    (paths.dir / "cache/checkpoints/ckpt.pt").write_bytes(b"w" * 4096)
    (paths.dir / "cache/checkpoints/ckpt.json").write_text("x" * 4096)
    gitops.check_run_dir(Git(repo), paths, gitops.allowed_files(paths, None), 1024)  # ignored once written
    assert not (repo / ".training-progress/.gitignore").exists()


def test_write_bundle_gives_up_without_raising_when_its_directory_cannot_be_made(repo: Path) -> None:
    target = repo / "README.md" / "nanecho-unpushed.bundle"
    assert gitpush.write_bundle(Git(repo), target, "origin", "main") is None


def test_open_repo_names_a_directory_that_is_not_a_work_tree(tmp_path: Path) -> None:
    with pytest.raises(NanechoError, match="not a git work tree") as caught:
        gitops.open_repo(tmp_path)
    assert caught.value.path == str(tmp_path)


def test_commit_result_version_matches_the_schema() -> None:
    from nanecho_core import schema
    from nanecho_core.progress_commit import COMMIT_RESULT_VERSION

    assert schema.current_version("commit_result") == COMMIT_RESULT_VERSION


def test_git_output_that_is_not_utf8_is_read_not_a_crash(repo: Path) -> None:
    # A ref name's bytes come back in git's output as they are: strict decoding raised
    # UnicodeDecodeError after a push had already landed.
    runner = gitops.open_repo(repo)
    assert runner.run("branch", "b\udcff").ok  # the name reaches git as the byte 0xff
    listed = runner.out("for-each-ref", "--format=%(refname)", "refs/heads/")
    assert "refs/heads/b\ufffd" in listed.splitlines()

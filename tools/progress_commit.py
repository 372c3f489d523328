"""`progress-commit`: commit a run's small progress files and push them so that they provably land."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nanecho_core.commit_message import DEFAULT_SKIP_CI_MARKER
from nanecho_core.errors import NothingToDo
from nanecho_core.fsio import atomic_write_json
from nanecho_core.github import write_outputs
from nanecho_core.gitops import DEFAULT_MAX_BYTES
from nanecho_core.progress_commit import CommitRequest, check_writable, commit_progress
from nanecho_core.store import refuse_kept_file, run_paths
from nanecho_tools._cli import App, JsonFlag, RootDir, RunDir, echo_json, run

app = App(help="Commit (and push) a run's progress files; never report a push that did not land.")


@app.command()
def progress_commit(
    run_dir: RunDir,
    root: RootDir = Path("."),
    message_from: Annotated[
        Path | None, typer.Option("--message-from", help="step.json whose figures go into the message.")
    ] = None,
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push after committing.")] = False,
    remote: Annotated[str, typer.Option("--remote", help="Remote to push to.")] = "origin",
    branch: Annotated[
        str | None, typer.Option("--branch", help="Branch to push (default: current, or GITHUB_REF).")
    ] = None,
    retries: Annotated[int, typer.Option("--retries", help="Re-tries after a rejected push.")] = 5,
    out: Annotated[Path, typer.Option("--out", help="Where to write commit-result.json.")] = Path(
        "commit-result.json"
    ),
    readme: Annotated[
        Path | None, typer.Option("--readme", help="README whose progress block may be committed.")
    ] = None,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", help="Size cap per committed file.")
    ] = DEFAULT_MAX_BYTES,
    skip_ci_marker: Annotated[
        str, typer.Option("--skip-ci-marker", help="Marker in the body so CI is not retriggered ('' = none).")
    ] = DEFAULT_SKIP_CI_MARKER,
    git_name: Annotated[
        str | None,
        typer.Option("--git-name", help="Bot name when git has no identity (env NANECHO_GIT_NAME)."),
    ] = None,
    git_email: Annotated[
        str | None, typer.Option("--git-email", help="Bot email when git has none (env NANECHO_GIT_EMAIL).")
    ] = None,
    backoff: Annotated[float, typer.Option("--backoff", help="Base seconds of the retry backoff.")] = 1.0,
    bundle_dir: Annotated[
        Path | None,
        typer.Option(
            "--bundle-dir", help="Where a failed push leaves its git bundle (default: --out's dir)."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Stage only the run's small files, commit with a detailed message, push with retries.

    Exit 0: committed (and, with --push, verified on the remote); 2: error or failed push (a git
    bundle of the commit is left for recovery); 3: nothing to commit.

    Example:

      progress-commit --run .training-progress/nanecho-cached-ci --message-from step.json --push --branch main
    """
    request = CommitRequest(
        root=root,
        run=run_dir,
        message_from=message_from,
        push=push,
        remote=remote,
        branch=branch,
        retries=retries,
        readme=readme,
        max_bytes=max_bytes,
        skip_ci_marker=skip_ci_marker,
        git_name=git_name,
        git_email=git_email,
        backoff_s=backoff,
        bundle_dir=bundle_dir if bundle_dir is not None else out.parent,
    )
    refuse_kept_file(out, run_paths(root, run_dir), "--out")  # refused before committing, not after
    check_writable(out, "--out")
    result = commit_progress(request)
    doc = result.to_doc()
    atomic_write_json(out, doc)
    write_outputs({"sha": result.sha, "pushed": result.pushed, "attempts": result.attempts})
    error = result.error()
    if error is not None:
        raise error
    if result.status == "nothing":
        raise NothingToDo(f"{result.note} (exit 3)")
    if json_out:
        echo_json(doc)
    else:
        typer.echo(f"{result.status} {result.sha} {result.subject}")
    if result.note:
        typer.echo(result.note, err=True)


def main() -> None:
    run(app)

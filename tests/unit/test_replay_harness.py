"""The replay harness on small synthetic workflows: env files, conditions, shells, timeouts, jobs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from replay import Replay, ReplayError

IDENT = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    sh(src, "git", "init", "-q", "-b", "main")
    (src / "hello.txt").write_text("hello\n")
    sh(src, "git", "add", ".")
    sh(src, "git", *IDENT, "commit", "-q", "-m", "init")
    sh(tmp_path, "git", "clone", "-q", "--bare", str(src), "remote.git")
    return tmp_path / "remote.git"


def replay_of(tmp_path: Path, remote: Path, yaml_text: str, **kwargs) -> Replay:
    workflow = tmp_path / "wf.yml"
    workflow.write_text(textwrap.dedent(yaml_text))
    return Replay(workflow, remote, tmp_path / "state", **kwargs)


def test_outputs_env_path_and_summary_flow_between_steps_and_jobs(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        name: flow
        on: [push]
        env: {LEVEL: workflow, TOP: "t-${{ github.event_name }}"}
        jobs:
          one:
            runs-on: ubuntu-latest
            env: {LEVEL: job}
            outputs:
              greeting: ${{ steps.make.outputs.greeting }}
            steps:
              - uses: actions/checkout@v5
              - id: make
                env: {LEVEL: step}
                run: |
                  echo "greeting=hi from $LEVEL/$TOP" >> "$GITHUB_OUTPUT"
                  { echo "body<<EOF"; echo "line 1"; echo "line 2"; echo "EOF"; } >> "$GITHUB_OUTPUT"
                  echo "FROM_ENV_FILE=yes" >> "$GITHUB_ENV"
                  mkdir -p "$RUNNER_TEMP/bin" && printf '#!/bin/sh\\necho tool-ran\\n' > "$RUNNER_TEMP/bin/mytool"
                  chmod +x "$RUNNER_TEMP/bin/mytool" && echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
                  echo "### from one" >> "$GITHUB_STEP_SUMMARY"
              - id: use
                run: |
                  echo "level=$LEVEL env-file=$FROM_ENV_FILE body=${{ steps.make.outputs.body }}" | tr '\\n' '|'
                  mytool
                  cat hello.txt
                  test "$GITHUB_SHA" = "$(git rev-parse HEAD)"
                  echo "event=$GITHUB_EVENT_NAME run=$GITHUB_RUN_ID ref=$GITHUB_REF_NAME"
          two:
            needs: one
            runs-on: ubuntu-latest
            steps:
              - id: got
                run: echo "${{ needs.one.outputs.greeting }} (${{ needs.one.result }})"
    """,
    )
    first = replay.run("push")
    assert first.conclusion == "success", [s.log for s in first.steps]
    assert first.step("one", "make").outputs == {"greeting": "hi from step/t-push", "body": "line 1\nline 2"}
    log = first.step("one", "use").log
    assert "level=job env-file=yes body=line 1|line 2|" in log
    assert "tool-ran\nhello\n" in log
    assert f"event=push run={first.run_id} ref=main" in log
    assert first.step("two", "got").log == "hi from step/t-push (success)\n"
    assert first.job_outputs["one"] == {"greeting": "hi from step/t-push"}
    assert first.summaries == {"one": "### from one\n", "two": ""}
    second = replay.run("push")
    assert second.run_id == first.run_id + 1


def test_a_failed_step_skips_the_rest_except_always_and_failure_steps(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - {id: soft, run: exit 3, continue-on-error: true}
              - {id: after_soft, run: "echo ${{ steps.soft.outcome }}/${{ steps.soft.conclusion }}"}
              - {id: hard, run: exit 4}
              - {id: skipped, run: echo no}
              - {id: on_failure, if: failure(), run: echo cleanup}
              - {id: on_always, if: "${{ always() }}", run: echo always}
              - {id: on_success_and, if: "steps.hard.outcome == 'failure'", run: echo no}
          b:
            needs: a
            runs-on: ubuntu-latest
            steps: [{id: x, run: echo no}]
          c:
            needs: a
            if: failure()
            runs-on: ubuntu-latest
            steps: [{id: x, run: echo reported}]
    """,
    )
    result = replay.run("push")
    outcomes = {s.id: (s.outcome, s.conclusion) for s in result.steps if s.job == "a"}
    assert outcomes == {
        "soft": ("failure", "success"),
        "after_soft": ("success", "success"),
        "hard": ("failure", "failure"),
        "skipped": ("skipped", "skipped"),
        "on_failure": ("success", "success"),
        "on_always": ("success", "success"),
        "on_success_and": ("skipped", "skipped"),
    }
    assert result.step("a", "after_soft").log == "failure/success\n"
    assert "Process completed with exit code 4" in result.step("a", "hard").log
    assert result.jobs == {"a": "failure", "b": "skipped", "c": "success"}
    assert result.conclusion == "failure"


def test_shell_bash_has_pipefail_and_the_default_shell_does_not(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - {id: default, run: "false | true", continue-on-error: true}
              - {id: bash, shell: bash, run: "false | true", continue-on-error: true}
              - {id: sh, shell: sh, run: "false; echo unreachable", continue-on-error: true}
              - {id: boolean_run, run: false, continue-on-error: true}
    """,
    )
    result = replay.run("push")
    assert [result.step("a", s).outcome for s in ("default", "bash", "sh", "boolean_run")] == [
        "success", "failure", "failure", "failure",
    ]  # fmt: skip


TRAP_SCRIPT = """
                  trap 'echo got-INT > "$RUNNER_TEMP/int"; exit 0' INT
                  ( trap 'echo child-INT > "$RUNNER_TEMP/child"; exit 0' INT; while true; do sleep 0.1; done ) &
                  wait
"""


def test_step_timeout_interrupts_the_whole_process_group_and_fails_the_step(tmp_path, remote):
    replay = replay_of(tmp_path, remote, f"""
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - id: slow
                timeout-minutes: 10
                run: |{TRAP_SCRIPT}
              - {{id: next, run: echo no}}
              - {{id: always, if: always(), run: 'cat "$RUNNER_TEMP/int" "$RUNNER_TEMP/child"'}}
    """, grace=(2.0, 1.0))  # fmt: skip
    started = time.monotonic()
    result = replay.run("push", timeouts={"a/slow": 0.5})
    assert time.monotonic() - started < 8
    slow = result.step("a", "slow")
    assert (slow.outcome, slow.timed_out) == ("failure", True)
    assert "The action has timed out" in slow.log
    assert result.step("a", "next").outcome == "skipped"
    assert result.step("a", "always").log == "got-INT\nchild-INT\n"
    assert result.jobs == {"a": "failure"}


def test_job_timeout_cancels_the_job_and_always_steps_still_run(tmp_path, remote):
    replay = replay_of(tmp_path, remote, """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            timeout-minutes: 60
            steps:
              - {id: slow, run: "exec sleep 30"}
              - {id: plain, run: echo no}
              - {id: cleanup, if: always(), run: "echo cleanup ${{ job.status }}"}
              - {id: on_cancel, if: cancelled(), run: echo cancelled}
          b:
            needs: a
            runs-on: ubuntu-latest
            steps: [{id: x, run: echo no}]
    """, grace=(0.2, 0.2))  # fmt: skip
    result = replay.run("push", timeouts={"a": 1.0})
    assert (result.step("a", "slow").outcome, result.step("a", "slow").timed_out) == ("cancelled", True)
    assert "The job has exceeded the maximum execution time" in result.step("a", "slow").log
    assert result.step("a", "plain").outcome == "skipped"
    assert result.step("a", "cleanup").log == "cleanup cancelled\n"
    assert result.step("a", "on_cancel").outcome == "success"
    assert result.jobs == {"a": "cancelled", "b": "skipped"}
    assert result.conclusion == "cancelled"


def test_workflow_dispatch_inputs_get_defaults_types_and_validation(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        on:
          workflow_dispatch:
            inputs:
              preset: {type: choice, options: [ci, full], default: ci}
              fresh: {type: boolean, default: false}
              iters: {type: string, default: ""}
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - id: show
                run: echo "${{ inputs.preset }} ${{ inputs.fresh && 'fresh' || 'keep' }} [${{ inputs.iters }}]"
    """,
    )
    assert replay.run("workflow_dispatch").step("a", "show").log == "ci keep []\n"
    given = replay.run("workflow_dispatch", inputs={"preset": "full", "fresh": "true", "iters": "5"})
    assert given.step("a", "show").log == "full fresh [5]\n"
    with pytest.raises(ReplayError, match="not one of"):
        replay.start("workflow_dispatch", inputs={"preset": "huge"})
    with pytest.raises(ReplayError, match="unknown workflow_dispatch inputs"):
        replay.start("workflow_dispatch", inputs={"nope": "1"})
    with pytest.raises(ReplayError, match="not triggered by push"):
        replay.start("push")


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("strategy: {matrix: {os: [a, b]}}\n    runs-on: x\n    steps: [{run: echo}]", "unsupported keys"),
        ("runs-on: x\n    services: {db: {image: postgres}}\n    steps: [{run: echo}]", "unsupported keys"),
        ("runs-on: x\n    steps: [{uses: actions/github-script@v7}]", "not emulated"),
        ("runs-on: x\n    steps: [{run: echo, uses: actions/checkout@v5}]", "exactly one of run/uses"),
        ("runs-on: x\n    steps: [{run: echo, with-typo: 1}]", "unsupported keys"),
    ],
)
def test_unsupported_constructs_fail_loudly_at_load(tmp_path, remote, snippet, message):
    with pytest.raises(ReplayError, match=message):
        replay_of(tmp_path, remote, f"on: push\njobs:\n  a:\n    {snippet}\n")


def test_unsupported_expressions_and_shells_fail_loudly_at_run_time(tmp_path, remote):
    from replay.expressions import ExpressionError

    replay = replay_of(
        tmp_path,
        remote,
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: 'echo ${{ matrix.os }}'}]\n",
    )
    with pytest.raises(ExpressionError, match="unknown context 'matrix'"):
        replay.run("push")
    replay = replay_of(
        tmp_path, remote, "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo, shell: pwsh}]\n"
    )
    with pytest.raises(ReplayError, match="shell 'pwsh'"):
        replay.run("push")


def test_push_needs_contents_write_and_persisted_credentials(tmp_path, remote):
    push = 'git -c user.name=t -c user.email=t@x commit -q --allow-empty -m "${{ github.job }}" && git push -q origin HEAD:main'
    replay = replay_of(tmp_path, remote, f"""
        on: push
        permissions: {{contents: read}}
        jobs:
          reader:
            runs-on: x
            steps: [{{uses: actions/checkout@v5}}, {{id: push, run: '{push}', continue-on-error: true}}]
          no_creds:
            runs-on: x
            permissions: {{contents: write}}
            steps:
              - {{uses: actions/checkout@v5, with: {{persist-credentials: false}}}}
              - {{id: push, run: '{push}', continue-on-error: true}}
          writer:
            runs-on: x
            permissions: {{contents: write}}
            steps: [{{uses: actions/checkout@v5}}, {{id: push, run: '{push}'}}]
    """)  # fmt: skip
    result = replay.run("push")
    assert result.step("reader", "push").outcome == "failure"
    assert "contents: read" in result.step("reader", "push").log
    assert result.step("no_creds", "push").outcome == "failure"
    assert "persist-credentials: false" in result.step("no_creds", "push").log
    assert result.step("writer", "push").outcome == "success"
    assert sh(remote, "git", "log", "--format=%s", "-1", "main") == "writer"


def test_checkout_is_shallow_and_pinned_to_the_event_commit_even_if_the_branch_moves(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/checkout@v5
              - {id: show, run: 'git rev-parse --is-shallow-repository HEAD; git branch --show-current; cat hello.txt'}
    """,
    )
    handle = replay.start("push")
    event_sha = handle.github["sha"]
    clone = tmp_path / "mover"
    sh(tmp_path, "git", "clone", "-q", str(remote), str(clone))
    (clone / "hello.txt").write_text("moved\n")
    sh(clone, "git", *IDENT, "commit", "-qam", "move main")
    sh(clone, "git", "push", "-q", "origin", "main")
    result = handle.finish()
    assert result.step("a", "show").log == f"true\n{event_sha}\nmain\nhello\n"


def test_cli_replays_a_workflow_and_reports_each_step(tmp_path, remote):
    (tmp_path / "wf.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - {id: hi, run: echo hi}\n"
    )
    command = [
        sys.executable,
        "-m",
        "replay",
        "--workflow",
        str(tmp_path / "wf.yml"),
        "--remote",
        str(remote),
    ]
    result = subprocess.run(
        [*command, "--state", str(tmp_path / "s"), "--runs", "2"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("success") >= 4 and "== run 1002: success {'a': 'success'}" in result.stdout
    assert "    hi\n" in result.stdout


def test_cli_rejects_an_unsupported_workflow_with_one_error_line(tmp_path, remote):
    (tmp_path / "wf.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: x\n    container: node:20\n    steps: []\n"
    )
    command = [
        sys.executable,
        "-m",
        "replay",
        "--workflow",
        str(tmp_path / "wf.yml"),
        "--remote",
        str(remote),
    ]
    result = subprocess.run([*command, "--state", str(tmp_path / "s")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and "unsupported keys ['container']" in result.stderr
    assert result.stderr.count("\n") == 1


def test_schedule_and_branch_filters_decide_whether_an_event_triggers(tmp_path, remote):
    replay = replay_of(
        tmp_path,
        remote,
        """
        on:
          schedule: [{cron: "17 3 * * *"}]
          push: {branches: [release/*]}
        jobs:
          a:
            runs-on: x
            steps: [{id: show, run: 'echo "$GITHUB_EVENT_NAME ${{ github.event.schedule }}"'}]
    """,
    )
    assert replay.run("schedule").step("a", "show").log == "schedule 17 3 * * *\n"
    with pytest.raises(ReplayError, match="does not match branches"):
        replay.start("push")

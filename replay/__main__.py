"""`python -m replay` (`just replay`): run a workflow of this repository locally, N times in a row.

Without --remote, the working tree (tracked and untracked, not ignored files) is committed into a
fresh bare remote under the state directory, so the replay trains, commits and pushes there and
never touches this repository. Example:

    python -m replay --event workflow_dispatch --input iters=50 --runs 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from replay.actions import ReplayError, git, seed_remote
from replay.harness import Replay


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        if "=" not in value:
            raise SystemExit(f"Error: {what} {value!r} must be NAME=VALUE")
        name, text = value.split("=", 1)
        pairs[name] = text
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", default=".github/workflows/netrain-cached.yml", type=Path)
    parser.add_argument(
        "--state", type=Path, help="cache, artifacts, runners and run history (default: a new temp dir)"
    )
    parser.add_argument("--remote", type=Path, help="bare git remote (default: seeded from the working tree)")
    parser.add_argument(
        "--event", default="push", choices=["push", "pull_request", "schedule", "workflow_dispatch"]
    )
    parser.add_argument("--input", action="append", default=[], help="workflow_dispatch input NAME=VALUE")
    parser.add_argument("--var", action="append", default=[], help="repository variable NAME=VALUE (vars.*)")
    parser.add_argument(
        "--timeout", action="append", default=[], help="JOB[/STEP]=SECONDS overriding timeout-minutes"
    )
    parser.add_argument("--pr-head", help="head branch of a pull_request event")
    parser.add_argument("--runs", type=int, default=1, help="consecutive runs (default 1)")
    parser.add_argument("--quiet", action="store_true", help="only the step table, not the logs")
    args = parser.parse_args(argv)

    state = args.state or Path(tempfile.mkdtemp(prefix="nanecho-replay-"))
    remote = args.remote or state / "remote.git"
    if args.remote is None and not (remote / "HEAD").exists():
        root = Path(git("rev-parse", "--show-toplevel"))
        seed_remote(root, remote)
    timeouts = {name: float(value) for name, value in _pairs(args.timeout, "--timeout").items()}

    def echo(text: str) -> None:
        sys.stdout.write("    " + text)

    try:
        replay = Replay(
            args.workflow,
            remote,
            state,
            variables=_pairs(args.var, "--var"),
            echo=None if args.quiet else echo,
        )
        ok = True
        for _ in range(args.runs):
            handle = replay.start(args.event, inputs=_pairs(args.input, "--input") or None,
                                  pr_head=args.pr_head, timeouts=timeouts)  # fmt: skip
            sys.stdout.write(f"== run {handle.run_id} ({args.event})\n")
            for step in handle:
                sys.stdout.write(
                    f"  {step.outcome:9} {step.seconds:6.1f}s  {step.job}/{step.id}: {step.name}\n"
                )
            result = handle.finish()
            sys.stdout.write(f"== run {result.run_id}: {result.conclusion} {result.jobs}\n")
            if result.summary:
                sys.stdout.write("-- step summary --\n" + result.summary)
            ok = ok and result.conclusion == "success"
    except ReplayError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 2
    history = subprocess.run(["git", "log", "--oneline", "-5"], cwd=remote, capture_output=True, text=True)
    sys.stdout.write(f"state: {state}\nremote {remote}:\n{history.stdout}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Replay GitHub Actions workflows locally: the YAML's own steps, with GitHub's runner emulated.

`Replay(workflow, remote, state).run("push")` executes every job of the workflow against a bare git
remote, with the Actions cache and artifact stores kept under `state`. See docs/workflow.md.
"""

from replay.actions import ActionFailed, ReplayError, seed_remote
from replay.harness import Replay, RunHandle, RunResult, load_workflow
from replay.jobs import StepResult

__all__ = [
    "ActionFailed",
    "Replay",
    "ReplayError",
    "RunHandle",
    "RunResult",
    "StepResult",
    "load_workflow",
    "seed_remote",
]

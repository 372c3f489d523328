"""The progress commit's message: a one-line subject with the session's figures and a detailed body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SKIP_CI_MARKER = "[skip ci]"


@dataclass(frozen=True)
class CommitMessage:
    subject: str
    body: str

    @property
    def text(self) -> str:
        """The full message as git stores it: subject, blank line, body, trailing newline."""
        return f"{self.subject}\n\n{self.body}\n" if self.body else f"{self.subject}\n"


def _loss(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def _number(value: object, unit: str = "", digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def subject_line(run: str, session: Mapping[str, Any] | None) -> str:
    """`nanecho(<run>): session <id> iters a→b, val x→y` (or a figure-less update line)."""
    if session is None:
        return f"nanecho({run}): update progress"
    return (
        f"nanecho({run}): session {session['session_id']} "
        f"iters {session['start_iteration']}→{session['end_iteration']}, "
        f"val {_loss(session.get('start_val_loss'))}→{_loss(session.get('end_val_loss'))}"
    )


def _resume(session: Mapping[str, Any]) -> str:
    source = str(session.get("resume_source"))
    if session.get("resumed_from"):
        return f"{source} ({session['resumed_from']})"
    if source == "fresh" and session.get("fresh_reason"):
        return f"fresh ({session['fresh_reason']})"
    return source


def _best(metadata: Mapping[str, Any] | None) -> str:
    if not metadata or not metadata.get("best_id"):
        return "none"
    best_id = metadata["best_id"]
    for entry in metadata.get("checkpoints", []):
        if entry.get("id") == best_id:
            metric = metadata.get("quality", {}).get("metric", "val_loss")
            value = entry.get("metrics", {}).get(metric)
            return f"{best_id} ({metric} {_loss(value)}, iter {entry.get('iteration')})"
    return str(best_id)


def build_message(
    run: str,
    session: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    *,
    skip_ci_marker: str = DEFAULT_SKIP_CI_MARKER,
) -> CommitMessage:
    """Subject + body for a progress commit; `session` is a session record (step.json or last log line)."""
    lines: list[str] = [f"Run: {run}"]
    if session is not None:
        lines += [
            f"Session: {session['session_id']}",
            f"Preset: {session.get('preset')}",
            f"Trigger: {session.get('trigger')}",
            f"Iterations: {session['start_iteration']} → {session['end_iteration']}",
            f"Val loss: {_loss(session.get('start_val_loss'))} → {_loss(session.get('end_val_loss'))}"
            f" (session best {_loss(session.get('best_val_loss'))})",
            f"Resume source: {_resume(session)}",
            f"Best checkpoint: {_best(metadata)}",
            f"Tokens/s: {_number(session.get('tokens_per_s'))}",
            f"Wall time: {_number(session.get('wall_s'), ' s', 1)}",
            f"Stop reason: {session.get('stop_reason')}",
            f"Device: {session.get('device')} x{session.get('world_size', 1)}",
            f"Code commit: {session.get('git_sha') or 'unknown'}",
        ]
    else:
        lines.append(f"Best checkpoint: {_best(metadata)}")
    if skip_ci_marker:
        lines += ["", skip_ci_marker]
    return CommitMessage(subject=subject_line(run, session), body="\n".join(lines))

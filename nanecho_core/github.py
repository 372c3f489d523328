"""GitHub Actions integration: `name=value` lines for $GITHUB_OUTPUT, Markdown for the step summary."""

from __future__ import annotations

import os
from collections.abc import Mapping

from nanecho_core import env
from nanecho_core.errors import NanechoError
from nanecho_core.redact import redact


def check_targets() -> None:
    """Refuse an unusable $GITHUB_OUTPUT / $GITHUB_STEP_SUMMARY before a tool does its work.

    They are written last, so finding out then would leave the work done and the step failed.
    """
    for variable, target in (
        ("GITHUB_OUTPUT", env.github_output()),
        ("GITHUB_STEP_SUMMARY", env.step_summary()),
    ):
        if target is None:
            continue
        parent = os.path.dirname(os.path.abspath(target))
        if os.path.isdir(target) or not os.path.isdir(parent):
            raise NanechoError(f"${variable} is not a file that can be appended to", target)
        problem = _append_problem(target)
        if problem is not None:
            raise NanechoError(f"${variable} cannot be appended to: {problem}", target)


def _append_problem(target: os.PathLike[str]) -> str | None:
    """Why appending to `target` would fail, found without creating or changing anything."""
    if os.path.exists(target):
        try:  # no O_CREAT; O_NONBLOCK: a FIFO without a reader fails instead of blocking
            os.close(os.open(target, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
        except OSError as exc:
            return exc.strerror or str(exc)
        return None
    real = os.path.realpath(target)  # where a dangling link would create it
    directory, name = os.path.split(real)
    if not os.path.isdir(directory):
        return "No such file or directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return "Permission denied"
    if len(os.fsencode(name)) > os.pathconf(directory, "PC_NAME_MAX"):
        return "File name too long"
    return None


def write_outputs(values: Mapping[str, object]) -> None:
    """Append `name=value` lines to $GITHUB_OUTPUT when it is set (null becomes empty)."""
    target = env.github_output()
    if target is None:
        return
    lines = []
    for name, value in values.items():
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if "\n" in text:
            raise NanechoError(f"output {name} must be one line", target)
        lines.append(f"{name}={redact(text)}\n")
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.writelines(lines)
    except OSError as exc:
        raise NanechoError(f"cannot append outputs: {exc.strerror or exc}", target) from exc


def append_step_summary(markdown: str) -> bool:
    """Append Markdown to $GITHUB_STEP_SUMMARY when set; returns whether it was written."""
    target = env.step_summary()
    if target is None:
        return False
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(redact(markdown).rstrip("\n") + "\n")
    except OSError as exc:
        raise NanechoError(f"cannot append step summary: {exc.strerror or exc}", target) from exc
    return True

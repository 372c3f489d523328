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
        try:  # the runner creates these files first: opening one for appending changes nothing
            with open(target, "a", encoding="utf-8"):
                pass
        except OSError as exc:  # a name too long, a dangling link into a missing directory, no rights
            raise NanechoError(f"${variable} cannot be appended to: {exc.strerror or exc}", target) from exc


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

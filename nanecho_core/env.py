"""Every environment variable NanEcho reads, in one place."""

from __future__ import annotations

import os
import socket
from pathlib import Path

TRIGGERS = ("push", "pull_request", "schedule", "workflow_dispatch", "local")
# Variables whose values are secrets: never printed, redacted wherever they appear.
SECRET_VARIABLES = ("GITHUB_TOKEN", "GH_TOKEN", "NANECHO_TOKEN", "ACTIONS_RUNTIME_TOKEN", "GIT_PASSWORD")


def github_output() -> Path | None:
    value = os.environ.get("GITHUB_OUTPUT")
    return Path(value) if value else None


def step_summary() -> Path | None:
    value = os.environ.get("GITHUB_STEP_SUMMARY")
    return Path(value) if value else None


def trigger() -> str:
    """The event that started this session: GITHUB_EVENT_NAME mapped onto the schema's triggers."""
    event = os.environ.get("NANECHO_TRIGGER") or os.environ.get("GITHUB_EVENT_NAME") or "local"
    return event if event in TRIGGERS else "local"


def git_sha() -> str | None:
    value = os.environ.get("GITHUB_SHA")
    return value.lower() if value else None


def host() -> str:
    return os.environ.get("NANECHO_HOST") or socket.gethostname() or "unknown"


def run_id() -> str | None:
    return os.environ.get("GITHUB_RUN_ID")


# Shorter values are not redacted as such: "2026" in GIT_PASSWORD turned every session id and
# checkpoint path in $GITHUB_OUTPUT into "***1125T…". Real tokens are 40+ characters, and URL
# credentials are redacted by shape whatever their length (redact.py).
MIN_SECRET_LENGTH = 8


def secret_values() -> list[str]:
    """Values of known secret variables, longest first (so substrings redact cleanly)."""
    values = [os.environ.get(name, "") for name in SECRET_VARIABLES]
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def bot_identity() -> tuple[str, str]:
    """The identity progress-commit uses when git has none configured (overridable)."""
    return (
        os.environ.get("NANECHO_GIT_NAME", "nanecho-bot"),
        os.environ.get("NANECHO_GIT_EMAIL", "nanecho-bot@users.noreply.github.com"),
    )


def event_name() -> str | None:
    """The raw GitHub event name (pull_request, push, …), None outside Actions."""
    return os.environ.get("GITHUB_EVENT_NAME") or None


def ref_branch() -> str | None:
    """The branch a push-type workflow run checked out (GITHUB_REF=refs/heads/<b>), else None."""
    ref = os.environ.get("GITHUB_REF", "")
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None


def cache_key() -> str | None:
    """The Actions cache key the workflow will save this session's checkpoints under (train-step)."""
    return os.environ.get("NANECHO_CACHE_KEY") or None


def cpu_engine() -> str:
    """NANECHO_CPU_ENGINE: how train-step computes a CPU step (auto, onednn, mm or autograd)."""
    return (os.environ.get("NANECHO_CPU_ENGINE") or "auto").strip().lower()

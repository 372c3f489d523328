"""Remove credentials from anything NanEcho prints, logs, commits or writes."""

from __future__ import annotations

import re

from nanecho_core import env

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_TOKEN_SHAPES = re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b")
REDACTED = "***"


def redact(text: str) -> str:
    """Replace URL userinfo, GitHub-shaped tokens and secret env values with ***."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    for secret in env.secret_values():
        text = text.replace(secret, REDACTED)
    return text

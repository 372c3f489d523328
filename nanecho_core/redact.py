"""Remove credentials from anything NanEcho prints, logs, commits or writes."""

from __future__ import annotations

import re

from nanecho_core import env

# Greedy to the last `@` before the host (a password may itself hold an unescaped `@`), but never
# across what ends an authority or a URL: a path, query, fragment, or text around the URL.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s|<>\"'`()\[\]]+)@")
# Credentials passed in a URL's query string (`?access_token=…`, GitLab's `private_token`, …).
_QUERY_SECRETS = re.compile(
    r"(?P<key>[?&;](?:[a-z0-9_.-]*token|password|passwd|pwd|secret|api[_-]?key|key|auth|sig|signature)=)"
    r"[^&;#\s]+",
    re.IGNORECASE,
)
_TOKEN_SHAPES = re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b")
REDACTED = "***"


def redact(text: str) -> str:
    """Replace URL userinfo and query-string credentials, GitHub-shaped tokens and secret env values with ***."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _QUERY_SECRETS.sub(lambda m: f"{m.group('key')}{REDACTED}", text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    for secret in env.secret_values():
        text = text.replace(secret, REDACTED)
    return text

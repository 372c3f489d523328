"""The one user-facing error type: every tool maps it to a one-line message and exit code 2."""

from __future__ import annotations

from os import PathLike


class NanechoError(Exception):
    """A user error: bad input, a missing file, a rejected push. Never a bug."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        path: str | PathLike[str] | None = None,
        json_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.json_path = json_path

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.json_path:
                where += f":{self.json_path}"
            where += ": "
        elif self.json_path:
            where = f"{self.json_path}: "
        # One line, always: messages built from subprocess output may carry newlines, and keys or
        # values quoted from a hostile document may carry \r, \u2028 or terminal escapes.
        return _one_printable_line("Error: " + where + self.message)


def _one_printable_line(text: str) -> str:
    """Line breaks of any kind become spaces; other control characters are shown escaped."""
    text = " ".join(text.splitlines())
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text).strip()


class NothingToDo(Exception):
    """Raised when a tool has nothing to do (exit 3), e.g. progress-commit with no changes."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def json_path_of(parts: object) -> str:
    """Render a jsonschema error path (deque of keys/indices) as `$.a[0].b`."""
    out = "$"
    for part in parts:  # type: ignore[attr-defined]
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out

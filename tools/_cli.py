"""What every NanEcho CLI shares: error mapping, app construction, and common option types."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from nanecho_core.errors import NanechoError, NothingToDo
from nanecho_core.github import check_targets
from nanecho_core.redact import redact

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Map NanechoError to one `Error: …` line on stderr + exit 2, NothingToDo to exit 3."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _check_text_arguments(kwargs)
            check_targets()
            return func(*args, **kwargs)
        except NanechoError as exc:
            typer.echo(redact(str(exc)), err=True)
            raise typer.Exit(exc.exit_code) from None
        except NothingToDo as exc:
            typer.echo(redact(exc.message), err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _check_text_arguments(kwargs: dict[str, Any]) -> None:
    """Text arguments must be UTF-8: other bytes reach Python as lone surrogates, which no JSON
    document or git message can hold (they crashed the write, after the work was done)."""
    from nanecho_core.fsio import is_utf8  # every command needs fsio; `--help` need not load it

    for name, value in kwargs.items():
        if isinstance(value, str) and not is_utf8(value):
            raise NanechoError(f"{name.upper()} is not valid UTF-8 text")


class App(typer.Typer):
    """A Typer app whose commands all go through `handle_errors`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("no_args_is_help", False)
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:  # type: ignore[override]
        register = super().command(*args, **kwargs)

        def decorator(func: F) -> F:
            register(handle_errors(func))
            return func

        return decorator


def run(app: typer.Typer) -> None:
    """Console-script entry point."""
    app(prog_name=Path(sys.argv[0]).name)


def echo_json(doc: Any) -> None:
    from nanecho_core.fsio import dumps_canonical

    typer.echo(dumps_canonical(doc), nl=False)


# Options shared across commands (defined once, reused: sqlite-utils style).
RunDir = Annotated[
    Path,
    typer.Option(
        "--run", help="Run directory, e.g. .training-progress/nanecho-cached-ci (relative to --root)."
    ),
]
RootDir = Annotated[Path, typer.Option("--root", help="Repository root; relative paths resolve against it.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
OutPath = Annotated[Path, typer.Option("--out", help="Where to write the JSON result.")]

"""What every NanEcho CLI shares: error mapping, app construction, and common option types."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer 0.2x vendors click; older releases use the click package
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors  # type: ignore[no-redef]

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
            func(*args, **kwargs)
            sys.stdout.flush()  # a full disk under `> file` is reported here, not at exit
            return None  # a command's exit status is typer.Exit's, never its return value
        except NanechoError as exc:
            typer.echo(redact(str(exc)), err=True)
            raise typer.Exit(exc.exit_code) from None
        except NothingToDo as exc:
            typer.echo(redact(exc.message), err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


# What writing to a full or failing stdout raises (a closed pipe, EPIPE, is typer's to handle).
_STDOUT_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit cannot fail again on what was left buffered."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _check_text_arguments(kwargs: dict[str, Any]) -> None:
    """Text and path arguments must be UTF-8: other bytes reach Python as lone surrogates, which no
    JSON document or git message can hold (they crashed the write, after the work was done)."""
    from nanecho_core.fsio import is_utf8  # every command needs fsio; `--help` need not load it

    for name, value in kwargs.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, str | Path) and not is_utf8(str(item)):
                raise NanechoError(f"{name.upper()} is not valid UTF-8 text")


def _one_line_errors(main: Callable[..., Any], standalone_mode: bool, prog_name: str | None) -> Any:
    """Run a command's click `main`; a bad command line is one `Error: …` line and exit 2.

    click prints usage, a hint and a boxed message (five lines) for an unknown option, a missing
    one or a value of the wrong type; this reports click's message and where help is. A stdout
    that cannot be written (a full disk) is reported the same way, not as a traceback.
    """
    if not standalone_mode:
        return main(standalone_mode=False)
    try:
        code = main(standalone_mode=False)
    except click_errors.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group called bare: its help, as before
            exc.show()
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else prog_name or Path(sys.argv[0]).name
        typer.echo(f"Error: {exc.format_message()} (see {where} --help)", err=True)
        sys.exit(2)
    except click_errors.ClickException as exc:
        typer.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(1)
    except OSError as exc:  # output (help included) to a full disk under `> file`
        if exc.errno not in _STDOUT_FULL or exc.filename is not None:  # a named file's error is not stdout's
            raise
        _silence_stdout()
        typer.echo(f"Error: cannot write to standard output: {exc.strerror}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


class _OneLineMain:
    """`main` for the click command classes below: `_one_line_errors` around click's own."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        click_main = super().main  # type: ignore[misc]
        run = functools.partial(
            click_main, args, prog_name, complete_var, windows_expand_args=windows_expand_args, **extra
        )
        return _one_line_errors(run, standalone_mode, prog_name)


class OneLineCommand(_OneLineMain, TyperCommand):
    pass


class OneLineGroup(_OneLineMain, TyperGroup):
    pass


class App(typer.Typer):
    """A Typer app whose commands all go through `handle_errors`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("no_args_is_help", False)
        kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
        kwargs.setdefault("cls", OneLineGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        kwargs.setdefault("cls", OneLineCommand)
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

"""`nanecho`: one app that mounts the five tools, for discoverability (`nanecho train-step --help`)."""

from __future__ import annotations

import typer

from nanecho_tools import ckpt_select, meta_update, progress_commit, summarize, train_step
from nanecho_tools._cli import App, run

app = App(
    help=(
        "NanEcho: train a small language model a little at a time and never lose progress. "
        "Each subcommand is also its own console script (ckpt-select, train-step, meta-update, "
        "progress-commit, summarize).\n\n"
        "Example: nanecho ckpt-select --run .training-progress/nanecho-cached-ci --out selection.json"
    ),
    no_args_is_help=True,
)
# Single-command tools mount as plain subcommands (`nanecho ckpt-select --run …`); add_typer would
# make them groups needing the name twice. meta-update, a group, mounts as one.
for _name, _tool in (
    ("ckpt-select", ckpt_select.app),
    ("train-step", train_step.app),
    ("progress-commit", progress_commit.app),
    ("summarize", summarize.app),
):
    (_info,) = _tool.registered_commands
    assert _info.callback is not None
    app.command(name=_name, help=_info.help or _tool.info.help)(_info.callback)
app.add_typer(meta_update.app, name="meta-update", help=meta_update.app.info.help)


def _print_version(value: bool) -> None:
    if value:
        from nanecho_core import __version__

        typer.echo(f"nanecho {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """NanEcho: train a small language model a little at a time and never lose progress."""


def main() -> None:
    run(app)

"""`nanecho`: one app that mounts the five tools, for discoverability (`nanecho train-step --help`)."""

from __future__ import annotations

import typer

from nanecho_tools import ckpt_select, meta_update, progress_commit, summarize, train_step
from nanecho_tools._cli import App, run

app = App(
    help=(
        "NanEcho: train a small language model a little at a time and never lose progress.\n\n"
        "Each subcommand is also its own console script (ckpt-select, train-step, meta-update,\n"
        "progress-commit, summarize). Example session:\n\n"
        "  ckpt-select --run .training-progress/nanecho-cached-ci --out selection.json\n\n"
        "  train-step --run .training-progress/nanecho-cached-ci --resume selection.json --out step.json"
    ),
    no_args_is_help=True,
)
app.add_typer(ckpt_select.app, name="ckpt-select")
app.add_typer(train_step.app, name="train-step")
app.add_typer(meta_update.app, name="meta-update")
app.add_typer(progress_commit.app, name="progress-commit")
app.add_typer(summarize.app, name="summarize")


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from nanecho_core import __version__

        typer.echo(f"nanecho {__version__}")
        raise typer.Exit(0)


def main() -> None:
    run(app)

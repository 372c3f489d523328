"""summarize: training_summary.json, PROGRESS.md, README block, step summary and HTML dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nanecho_tools._cli import App, JsonFlag, RootDir, run

app = App(help="Summarize NanEcho runs: derived JSON, Markdown charts, an HTML dashboard.")

Runs = Annotated[
    list[Path] | None,
    typer.Option(
        "--run",
        metavar="DIR",
        help="Run directory relative to --root (repeatable; default: every run found).",
    ),
]
Format = Annotated[
    str | None,
    typer.Option(
        "--format", metavar="FORMAT", help="What to print: json, md, html or term (default: a short summary)."
    ),
]


@app.command()
def summarize(
    root: RootDir = Path("."),
    runs: Runs = None,
    fmt: Format = None,
    readme: Annotated[
        Path | None,
        typer.Option(
            "--readme", metavar="PATH", help="README (relative to --root) whose marked block to update."
        ),
    ] = None,
    step_summary: Annotated[
        bool,
        typer.Option(
            "--step-summary", help="Append this session's figures and charts to $GITHUB_STEP_SUMMARY."
        ),
    ] = False,
    session: Annotated[
        Path | None,
        typer.Option(
            "--session", metavar="STEP_JSON", help="step.json of the session to show in the step summary."
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", metavar="PATH", help="Write the self-contained HTML dashboard here."),
    ] = None,
    legacy_history: Annotated[
        Path | None,
        typer.Option(
            "--legacy-history",
            metavar="JSONL",
            help="Render the old system's summary history (JSONL) instead of runs.",
        ),
    ] = None,
    no_write: Annotated[
        bool,
        typer.Option("--no-write", help="Only print; leave training_summary.json and PROGRESS.md alone."),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Regenerate each run's training_summary.json and .training-progress/PROGRESS.md, and print a summary.

    Example:

        summarize --root . --readme README.md --step-summary --session step.json --html dashboard.html

        summarize --run .training-progress/nanecho-cached-ci --format term

        summarize --legacy-history tests/fixtures/training_summary_history.jsonl --format md
    """
    from nanecho_core.github import write_outputs
    from nanecho_core.summary_report import (
        check_format,
        legacy_report,
        print_term,
        summarize,
        term_renderables,
    )

    fmt = "json" if json_out else fmt
    check_format(fmt)
    if legacy_history is not None:
        report = legacy_report(legacy_history, fmt, html)
    else:
        report = summarize(root, runs or [], fmt, readme, step_summary, session, html, write=not no_write)
    if fmt == "term":
        print_term(term_renderables(report))
    elif report.text:
        typer.echo(report.text, nl=False)
    write_outputs(report.outputs)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()

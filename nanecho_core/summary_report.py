"""What `summarize` does, end to end: read and validate everything, render, then write.

Nothing is written until every input has been read and every output rendered, so a malformed
input or a README without markers leaves every file as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanecho_core import github, store
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import check_inside, dumps_canonical
from nanecho_core.summary import (
    RECENT_SESSIONS,
    RunView,
    collect,
    progress_path,
    render_outputs,
    write_outputs,
)
from nanecho_core.summary_doc import summary_document

log = logging.getLogger(__name__)

FORMATS = ("json", "md", "html", "term")
MAX_LOG_WIDTH = 240  # `--format term` outside a terminal: widest line printed


@dataclass
class Report:
    """What the CLI prints and what it wrote."""

    text: str = ""  # stdout for json/md/html and the default short summary
    views: list[RunView] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # for $GITHUB_OUTPUT
    legacy: dict[str, Any] | None = None


def short_summary(views: Sequence[RunView]) -> str:
    from nanecho_core.summary_md import fmt_count, fmt_loss

    lines = []
    for view in views:
        s = view.summary
        lines.append(
            f"{view.name}: {s['sessions']} session{'' if s['sessions'] == 1 else 's'}, "
            f"iteration {s['latest_iteration']}, "
            f"{fmt_count(s['tokens_trained'])} tokens, best val loss {fmt_loss(s['best']['val_loss'])}, "
            f"resets {s['resets']}, regressions {s['regressions']}, trend {s['trend']['direction']}"
        )
    return "\n".join(lines) + "\n"


def summarize(
    root: Path,
    runs: Sequence[Path] = (),
    fmt: str | None = None,
    readme: Path | None = None,
    step_summary: bool = False,
    session: Path | None = None,
    html: Path | None = None,
    write: bool = True,
) -> Report:
    """Regenerate the derived files and produce the requested view."""
    from nanecho_core.summary_html import dashboard_html
    from nanecho_core.summary_md import (
        progress_markdown,
        readme_block,
        replace_readme_block,
        step_summary_markdown,
    )

    step = store.read_document(session, "session") if session is not None else None
    chosen = [store.run_paths(root, run) for run in runs] or None
    selected, all_views = collect(root, chosen)
    files: dict[Path, str] = render_outputs(selected, all_views) if write else {}
    if readme is not None:
        readme_path = readme if readme.is_absolute() else root / readme
        check_inside(readme_path, root, "README")
        block = readme_block(all_views, readme_path, progress_path(root))
        files[readme_path] = replace_readme_block(readme_path, block)
    if html is not None:
        for view in all_views:
            store.refuse_kept_file(html, view.paths, "--html")
    dashboard = dashboard_html(selected) if fmt == "html" or html is not None else None
    if html is not None and dashboard is not None:
        files[html] = dashboard
    step_md = None
    if step_summary:
        step_md = step_summary_markdown([v for v in selected if step is None or v.name == step["run"]], step)
    report = Report(views=selected)
    report.written = write_outputs(files)
    if step_md is not None and not github.append_step_summary(step_md):
        log.info("GITHUB_STEP_SUMMARY is not set; step summary not written")
    if fmt == "json":
        report.text = dumps_canonical(summary_document(selected))
    elif fmt == "md":
        report.text = progress_markdown(selected)
    elif fmt == "html" and html is None and dashboard is not None:
        report.text = dashboard
    elif fmt != "term":
        report.text = short_summary(selected)
    report.outputs = github_outputs(root, selected, report.written, html)
    return report


def github_outputs(
    root: Path, views: Sequence[RunView], written: Sequence[Path], html: Path | None
) -> dict[str, Any]:
    outputs: dict[str, Any] = {
        "runs": ",".join(v.name for v in views),
        "progress_file": progress_path(root).as_posix(),
        "resets": sum(v.summary["resets"] for v in views),
        "regressions": sum(v.summary["regressions"] for v in views),
        "dashboard": html.as_posix() if html is not None else None,
    }
    if len(views) == 1:
        outputs["best_val_loss"] = views[0].summary["best"]["val_loss"]
        outputs["best_checkpoint"] = views[0].summary["best"]["checkpoint_id"]
    return outputs


def legacy_report(path: Path, fmt: str | None, html: Path | None) -> Report:
    """`--legacy-history FILE`: the old system's history, rendered; run files are not touched."""
    from nanecho_core.history import legacy_html, legacy_markdown, load_legacy_history

    history = load_legacy_history(path)
    report = Report(legacy=history)
    if html is not None:
        report.written = write_outputs({html: legacy_html(history)})
    if fmt == "json":
        report.text = dumps_canonical(history)
    elif fmt == "html" and html is None:
        report.text = legacy_html(history)
    elif fmt in (None, "md"):
        report.text = legacy_markdown(history)
    report.outputs = {"resets": history["resets"], "versions": history["versions"]}
    return report


def term_renderables(report: Report) -> list[Any]:
    """rich tables for `--format term` (rich is imported only here, only when asked for)."""
    from rich.table import Table

    from nanecho_core.summary_md import comparison_rows, flag_text, fmt_count, fmt_loss

    if report.legacy is not None:
        table = Table(
            title=f"Legacy history: {report.legacy['resets']} resets in {report.legacy['versions']} versions"
        )
        for column in ("version", "commit date", "iteration", "best val loss", "reset"):
            table.add_column(column)
        for v in report.legacy["history"]:
            if v["reset"]:
                table.add_row(
                    str(v["version"]),
                    v["commit_date"],
                    f"{v['previous_iteration']} → {v['iteration']}",
                    fmt_loss(v["best_val_loss"]),
                    "RESET",
                    style="red",
                )
        return [table]
    header, rows = comparison_rows(report.views)
    # a terminal is narrow: the columns that tell runs apart (PROGRESS.md has them all)
    keep = [i for i, h in enumerate(header) if h not in ("wall", "tok/s", "best checkpoint")]
    comparison = Table(title="NanEcho runs")
    for i in keep:
        comparison.add_column(header[i])
    for row in rows:
        comparison.add_row(*[row[i].replace("`", "") for i in keep])
    out: list[Any] = [comparison]
    for view in report.views:
        table = Table(title=f"{view.name}: last {min(RECENT_SESSIONS, len(view.sessions))} sessions")
        for column in ("#", "session", "source", "iterations", "val loss", "tokens", "flags"):
            table.add_column(column)
        for r in view.sessions[-RECENT_SESSIONS:]:
            rec = r.record
            table.add_row(
                str(r.index),
                r.session_id,
                rec["resume_source"],
                f"{rec['start_iteration']} → {rec['end_iteration']}",
                f"{fmt_loss(rec['start_val_loss'])} → {fmt_loss(rec['end_val_loss'])}",
                fmt_count(r.tokens),
                flag_text(r).replace("**", ""),
                style="red" if r.flags else None,
            )
        out.append(table)
    return out


def print_term(renderables: list[Any]) -> None:
    """Print rich tables: fitted to a terminal, at their natural width anywhere else.

    Logs and pipes (CI, `| less`) have no width; rich would assume 80 columns and cut run names
    and values to "nanec…". There, unless COLUMNS says otherwise, each table gets the width its
    cells need (capped, so a pathological cell cannot produce a 10,000-column line).
    """
    from rich.console import Console

    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        for renderable in renderables:
            console.print(renderable)
        return
    for renderable in renderables:
        natural = Console(width=MAX_LOG_WIDTH).measure(renderable).maximum
        Console(width=max(80, min(natural, MAX_LOG_WIDTH))).print(renderable)


def check_format(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise NanechoError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")

"""The older system's training-summary history: import it, flag its resets, render it.

Each line of the history file is one committed version of the old `training_summary.json`:
`{"commit_date": ..., "summary": {"workflow_run", "completed_at", "parameters", "cache_stats",
"best_checkpoint": {"id", "val_loss", "iteration", ...}}}`. The old system kept no session log, so
the best checkpoint's iteration per version is the only progress signal; a version whose iteration
is below the previous one is a reset (the silent restarts NanEcho exists to prevent).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from html import escape
from typing import Any

from nanecho_core.errors import NanechoError
from nanecho_core.fsio import is_blank, parse_json, read_text
from nanecho_core.summary import downsample
from nanecho_core.summary_html import Chart, Series, html_table, page, svg_chart
from nanecho_core.summary_md import MERMAID_ONE_LINE, fmt_loss, md_table, mermaid_number

CHART_POINTS = 80
TABLE_ROWS = 20


def _utc(text: Any, path: str, where: str) -> str:
    if not isinstance(text, str):
        raise NanechoError("expected an ISO 8601 date string", path, where)
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise NanechoError(f"not an ISO 8601 date: {text!r}", path, where) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: Any, path: str, where: str, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise NanechoError(f"expected {'an integer' if integer else 'a number'}, got {value!r}", path, where)
    return value


def normalize_version(number: int, doc: Any, path: str) -> dict[str, Any]:
    """One history line as a flat, typed record (errors name the line and field)."""
    line = f"line {number}"
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), dict):
        raise NanechoError("expected an object with commit_date and summary", path, line)
    summary = doc["summary"]
    best = summary.get("best_checkpoint") or {}
    stats = summary.get("cache_stats") or {}
    if not isinstance(best, dict) or not isinstance(stats, dict):
        raise NanechoError("best_checkpoint and cache_stats must be objects", path, line)
    params = summary.get("parameters") if isinstance(summary.get("parameters"), dict) else {}
    return {
        "version": number,
        "commit_date": _utc(doc.get("commit_date"), path, f"{line}: $.commit_date"),
        "workflow_run": str(summary.get("workflow_run", "")),
        "training_type": str(summary.get("training_type", "")),
        "iteration": _number(
            best.get("iteration"), path, f"{line}: $.summary.best_checkpoint.iteration", integer=True
        ),
        "best_val_loss": _number(best.get("val_loss"), path, f"{line}: $.summary.best_checkpoint.val_loss"),
        "best_checkpoint_id": best.get("id") if isinstance(best.get("id"), str) else None,
        "total_checkpoints": _number(
            stats.get("total_checkpoints"), path, f"{line}: $.summary.cache_stats", integer=True
        ),
        "cache_size_mb": _number(stats.get("total_size_mb"), path, f"{line}: $.summary.cache_stats"),
        "max_iters": _number(
            params.get("max_iters"), path, f"{line}: $.summary.parameters.max_iters", integer=True
        ),
    }


def load_legacy_history(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the JSONL history (file order = commit order) and flag every backward jump in iterations."""
    name = os.fspath(path)
    text = read_text(name)
    versions: list[dict[str, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is valid JSON
        if not is_blank(line):
            try:
                doc = parse_json(line, name)
            except NanechoError as exc:
                raise NanechoError(exc.message, name, f"line {number}") from None
            versions.append(normalize_version(number, doc, name))
    if not versions:
        raise NanechoError("no history lines", name)
    previous: int | None = None
    peak = 0
    for version in versions:
        iteration = version["iteration"]
        version["previous_iteration"] = previous
        version["reset"] = iteration is not None and previous is not None and iteration < previous
        version["lost_iterations"] = (peak - iteration) if version["reset"] else 0
        if iteration is not None:
            previous = iteration
            peak = max(peak, iteration)
    losses = [v["best_val_loss"] for v in versions if v["best_val_loss"] is not None]
    return {
        "source": os.path.basename(name),
        "versions": len(versions),
        "resets": sum(1 for v in versions if v["reset"]),
        "first_commit_date": versions[0]["commit_date"],
        "last_commit_date": versions[-1]["commit_date"],
        "max_iteration": peak,
        "final_iteration": previous,
        "best_val_loss": min(losses) if losses else None,
        "history": versions,
    }


def _chart_versions(history: dict[str, Any]) -> list[dict[str, Any]]:
    """Versions to chart: evenly sampled, plus every reset and the version before it (jumps stay visible)."""
    versions = [v for v in history["history"] if v["iteration"] is not None]
    keep = {id(v) for v in downsample(versions, CHART_POINTS)}
    for i, version in enumerate(versions):
        if version["reset"]:
            keep.add(id(version))
            if i:
                keep.add(id(versions[i - 1]))
    return [v for v in versions if id(v) in keep]


def _resets_rows(history: dict[str, Any]) -> list[list[str]]:
    return [
        [
            str(v["version"]),
            v["commit_date"],
            v["workflow_run"],
            f"{v['previous_iteration']} → {v['iteration']}",
            str(v["lost_iterations"]),
            fmt_loss(v["best_val_loss"]),
        ]
        for v in history["history"]
        if v["reset"]
    ]


RESET_HEADER = ["version", "commit date", "workflow run", "iteration", "below peak by", "best val loss"]
VERSION_HEADER = ["version", "commit date", "workflow run", "iteration", "best val loss", "reset"]


def _version_rows(versions: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(v["version"]),
            v["commit_date"],
            v["workflow_run"],
            str(v["iteration"]),
            fmt_loss(v["best_val_loss"]),
            "RESET" if v["reset"] else "",
        ]
        for v in versions
    ]


def legacy_markdown(history: dict[str, Any]) -> str:
    shown = _chart_versions(history)
    labels = ", ".join(f'"v{v["version"]}{" reset" if v["reset"] else ""}"' for v in shown)
    top = max(v["iteration"] for v in shown) if shown else 0
    chart = (
        "```mermaid\n" + MERMAID_ONE_LINE + "xychart-beta\n"
        f'    title "Legacy history: best checkpoint iteration per version"\n'
        f'    x-axis "version" [{labels}]\n'
        f'    y-axis "iteration" 0 --> {mermaid_number(top * 1.05 or 1)}\n'
        f"    line [{', '.join(str(v['iteration']) for v in shown)}]\n"
        "```\n"
    )
    return "\n".join(
        [
            f"# Legacy training history ({history['source']})\n",
            f"{history['versions']} versions from {history['first_commit_date']} to {history['last_commit_date']}; "
            f"peak iteration {history['max_iteration']}, final {history['final_iteration']}, "
            f"best val loss {fmt_loss(history['best_val_loss'])}. "
            f"**{history['resets']} resets** (the best checkpoint's iteration went backwards).\n",
            chart,
            "## Resets\n",
            md_table(RESET_HEADER, _resets_rows(history)),
            f"## Chart data ({len(shown)} of {history['versions']} versions: sampled, plus each reset and the one before)\n",
            md_table(VERSION_HEADER, _version_rows(shown)),
        ]
    )


def legacy_html(history: dict[str, Any]) -> str:
    versions = [v for v in history["history"] if v["iteration"] is not None]
    resets = [
        (float(v["version"]), f"version {v['version']}: {v['previous_iteration']} → {v['iteration']}")
        for v in versions
        if v["reset"]
    ]
    iteration_chart = Chart(
        title="Best checkpoint iteration per version",
        x_label="version (commit order)",
        y_label="iteration",
        series=[
            Series("iteration", [(float(v["version"]), float(v["iteration"])) for v in versions], "#1f77b4")
        ],
        flagged=resets,
    )
    loss_chart = Chart(
        title="Best val loss per version (log scale)",
        x_label="version (commit order)",
        y_label="best val loss",
        series=[
            Series(
                "best val loss",
                [(float(v["version"]), float(v["best_val_loss"])) for v in versions if v["best_val_loss"]],
                "#2ca02c",
            )
        ],
        flagged=resets,
        log_y=True,
    )
    body = [
        f"<p>{history['versions']} versions of {escape(history['source'])}, {escape(history['first_commit_date'])} "
        f"to {escape(history['last_commit_date'])}: <b>{history['resets']} resets</b>, peak iteration "
        f"{history['max_iteration']}, best val loss {escape(fmt_loss(history['best_val_loss']))}. "
        "Red lines mark resets.</p>",
        svg_chart(iteration_chart),
        svg_chart(loss_chart),
        "<h2>Resets</h2>",
        html_table(RESET_HEADER, _resets_rows(history), [True] * history["resets"]),
        f"<h2>Last {TABLE_ROWS} versions</h2>",
        html_table(
            VERSION_HEADER,
            _version_rows(versions[-TABLE_ROWS:]),
            [v["reset"] for v in versions[-TABLE_ROWS:]],
        ),
    ]
    return page("NanEcho: legacy training history", "\n".join(body))

"""Markdown views of run summaries: PROGRESS.md, the README block, and the Actions step summary.

Every Mermaid `xychart-beta` chart has a plain table beside it, so the page reads where Mermaid
does not render (GitHub mobile, plain `cat`, other forges).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanecho_core.errors import NanechoError
from nanecho_core.fsio import read_bytes
from nanecho_core.summary import (
    FRESH_RESTART,
    OLDER_CHECKPOINT,
    RECENT_SESSIONS,
    WORSE_CHECKPOINT,
    RunView,
    SessionRow,
    sample_stride,
    stable_sample,
)

README_START = "<!-- nanecho:progress:start -->"
README_END = "<!-- nanecho:progress:end -->"
# Mermaid's default xychart palette draws the first line almost white; name the colours.
MERMAID_PALETTE = '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "#9aa0a6, #1f77b4"}}}}%%\n'
MERMAID_ONE_LINE = MERMAID_PALETTE.replace("#9aa0a6, ", "")
CHART_SAMPLES = 24  # at most this many grid points in the best-over-tokens chart
TABLE_POINTS = 16  # rows of the table beside it (new bests, downsampled)


def fmt_loss(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def fmt_count(value: float | None) -> str:
    """1234 → 1.23k, 5_600_000 → 5.6M (tokens and iterations read at a glance)."""
    if value is None:
        return "—"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def mermaid_number(value: float) -> str:
    """A plain decimal (Mermaid's parser has no exponent notation)."""
    text = f"{value:.6g}"
    if "e" in text:
        text = f"{value:.12f}".rstrip("0").rstrip(".") or "0"
    return text


def flag_text(row: SessionRow) -> str:
    parts = []
    if FRESH_RESTART in row.flags:
        parts.append(f"**reset**: fresh start after iteration {row.prior_max_iteration}")
    if OLDER_CHECKPOINT in row.flags:
        start = row.record["start_iteration"]
        parts.append(f"**reset**: started at {start} < {row.prior_max_iteration}")
    if WORSE_CHECKPOINT in row.flags:
        parts.append(
            f"**regression**: resumed {fmt_loss(row.resumed_val_loss)} > best {fmt_loss(row.best_known_val_loss)}"
        )
    if parts and row.record.get("regression_allowed"):
        parts.append("(allowed)")
    return "; ".join(parts)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _axis_range(values: Sequence[float]) -> tuple[str, str]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return mermaid_number(max(0.0, lo - pad)), mermaid_number(hi + pad)


def session_label(row: SessionRow) -> str:
    mark = " reset" if row.is_reset else " regression" if row.is_regression else ""
    return f"s{row.index}{mark}"


def sessions_chart(rows: Sequence[SessionRow], title: str) -> str:
    """Mermaid: val loss at the start and end of each session (sessions without an eval left out)."""
    plotted = [r for r in rows if r.record["end_val_loss"] is not None]
    if not plotted:
        return "_No evaluated sessions yet._\n"
    ends = [float(r.record["end_val_loss"]) for r in plotted]
    # A session that did not evaluate at its start (a fresh start) is drawn flat at its end value.
    starts = [float(r.record["start_val_loss"] or r.record["end_val_loss"]) for r in plotted]
    lo, hi = _axis_range(starts + ends)
    labels = ", ".join(f'"{session_label(r)}"' for r in plotted)
    return (
        "```mermaid\n" + MERMAID_PALETTE + "xychart-beta\n"
        f'    title "{title}"\n'
        f'    x-axis "session" [{labels}]\n'
        f'    y-axis "val loss" {lo} --> {hi}\n'
        f"    line [{', '.join(mermaid_number(v) for v in starts)}]\n"
        f"    line [{', '.join(mermaid_number(v) for v in ends)}]\n"
        "```\n"
    )


def nice_step(span: float, max_points: int) -> float:
    """The smallest 1-2-5 × 10^k step that covers `span` in at most `max_points` points."""
    raw = span / (max_points - 1)
    exponent = 10 ** math.floor(math.log10(raw))
    return next(m * exponent for m in (1, 2, 5, 10) if m * exponent >= raw)


def grid_best(curve: Sequence[tuple[float, float]], end: float, max_points: int) -> list[tuple[float, float]]:
    """Best val loss so far at 0, step, 2·step, … up to the first grid point at or past `end`.

    A fixed grid, not points spread over the current range: as sessions add tokens, earlier samples
    keep their positions and values, so PROGRESS.md grows by a number per session instead of
    rewriting the whole line. Before the first evaluation the first value is used (the line starts
    flat); the last grid point carries the latest best.
    """
    if not curve:
        return []
    total = max(curve[-1][0], end)
    if total <= 0:
        return [(0.0, curve[-1][1])]
    step = nice_step(total, max_points)
    out, j = [], 0
    for k in range(math.ceil(total / step - 1e-9) + 1):
        x = k * step
        while j + 1 < len(curve) and curve[j + 1][0] <= x:
            j += 1
        out.append((x, curve[j][1]))
    return out


def _token_scale(maximum: float) -> tuple[float, str]:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if maximum >= scale:
            return scale, suffix
    return 1.0, ""


def best_chart(view: RunView) -> str:
    """Mermaid + table: best val loss over cumulative tokens trained (all sessions, sampled)."""
    curve = view.curve
    points = grid_best(curve, view.summary["tokens_trained"], CHART_SAMPLES)
    if not points:
        return "_No evaluations yet._\n"
    scale, suffix = _token_scale(points[-1][0])
    lo, hi = _axis_range([p[1] for p in points])
    x0, x1 = mermaid_number(points[0][0] / scale), mermaid_number(points[-1][0] / scale)
    unit = f" ({suffix})" if suffix else ""
    chart = (
        "```mermaid\n" + MERMAID_ONE_LINE + "xychart-beta\n"
        f'    title "{view.name}: best val loss over tokens trained"\n'
        f'    x-axis "tokens trained{unit}" {x0} --> {x1}\n'
        f'    y-axis "best val loss" {lo} --> {hi}\n'
        f"    line [{', '.join(mermaid_number(p[1]) for p in points)}]\n"
        "```\n"
    )
    improvements = stable_sample(curve, TABLE_POINTS)
    table = md_table(
        ["tokens trained", "new best val loss"], [[fmt_count(x), fmt_loss(v)] for x, v in improvements]
    )
    # The chart reads the best at each grid step; the table lists improvements themselves, sampled
    # once there are many: the summary says which, so the two are not mistaken for each other.
    stride = sample_stride(len(curve), TABLE_POINTS)
    which = "each new best" if stride == 1 else f"every {ordinal(stride)} new best and the last"
    summary = f"Chart data: {which}"
    return chart + f"\n<details><summary>{summary}</summary>\n\n" + table + "\n</details>\n"


def ordinal(n: int) -> str:
    """2 -> 2nd, 4 -> 4th, 32 -> 32nd, 1024 -> 1024th."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def sessions_table(rows: Sequence[SessionRow]) -> str:
    header = ["#", "session", "started", "preset", "source", "iterations", "val loss", "tokens", "tok/s"]
    header += ["wall", "stop", "flags"]
    body = []
    for row in rows:
        rec = row.record
        source = rec["resume_source"] + (f" `{rec['resumed_from']}`" if rec["resumed_from"] else "")
        body.append(
            [
                str(row.index),
                f"`{row.session_id}`",
                rec["started_at"],
                rec["preset"],
                source,
                f"{rec['start_iteration']} → {rec['end_iteration']}",
                f"{fmt_loss(rec['start_val_loss'])} → {fmt_loss(rec['end_val_loss'])}",
                fmt_count(row.tokens),
                fmt_count(rec["tokens_per_s"]),
                fmt_duration(rec["wall_s"]),
                rec["stop_reason"],
                flag_text(row),
            ]
        )
    return md_table(header, body)


def best_at(view: RunView, tokens: float) -> float | None:
    """The run's best val loss once `tokens` tokens had been trained."""
    best = None
    for x, value in view.curve:
        if x > tokens:
            break
        best = value
    return best


def comparison_rows(views: Sequence[RunView]) -> tuple[list[str], list[list[str]]]:
    totals = [v.summary["tokens_trained"] for v in views if v.summary["curve"]]
    common = min(totals) if len(totals) > 1 else None
    header = ["run", "preset", "sessions", "latest iter", "tokens", "wall", "tok/s", "best val loss"]
    header += ["best checkpoint", "resets", "regressions", "trend"]
    if common is not None:
        header.insert(8, f"best @ {fmt_count(common)} tokens")
    body = []
    for view in views:
        s = view.summary
        trend = s["trend"]
        trend_text = trend["direction"] + (f" ({trend['delta']:+.3g})" if trend["delta"] is not None else "")
        row = [
            view.name,
            s["preset"] or "—",
            str(s["sessions"]),
            str(s["latest_iteration"]),
            fmt_count(s["tokens_trained"]),
            fmt_duration(s["wall_s"]),
            fmt_count(s["tokens_per_s_median"]),
            fmt_loss(s["best"]["val_loss"]),
            f"`{s['best']['checkpoint_id']}`" if s["best"]["checkpoint_id"] else "—",
            str(s["resets"]),
            str(s["regressions"]),
            trend_text,
        ]
        if common is not None:
            row.insert(8, fmt_loss(best_at(view, common)) if view.summary["curve"] else "—")
        body.append(row)
    return header, body


def comparison_table(views: Sequence[RunView]) -> str:
    header, body = comparison_rows(views)
    return md_table(header, body)


def best_line(view: RunView) -> str:
    best, latest = view.summary["best"], view.summary["latest"]
    text = f"**Best:** val loss {fmt_loss(best['val_loss'])}"
    if best["checkpoint_id"]:
        text += f", checkpoint `{best['checkpoint_id']}`"
    if best["iteration"] is not None:
        text += f" at iteration {best['iteration']}"
    if latest:
        text += (
            f". **Latest:** iteration {latest['end_iteration']}, val loss {fmt_loss(latest['end_val_loss'])}"
        )
        text += f" (session `{latest['session_id']}`, ended {latest['ended_at']})"
    return text + ".\n"


def run_section(view: RunView, level: str = "##") -> str:
    s = view.summary
    recent = view.sessions[-RECENT_SESSIONS:]
    sources = ", ".join(f"{k} {v}" for k, v in s["resume_sources"].items())
    parts = [
        f"{level} {view.name}\n",
        best_line(view),
        f"{s['sessions']} sessions, {s['iterations_trained']} iterations and {fmt_count(s['tokens_trained'])} "
        f"tokens trained in {fmt_duration(s['wall_s'])}; resumed from: {sources}; "
        f"resets: {s['resets']}, regressions: {s['regressions']}.\n",
        f"{level}# Val loss per session (last {len(recent)})\n",
        sessions_chart(recent, f"{view.name}: val loss per session (start, end)"),
        sessions_table(recent),
        f"{level}# Best val loss over tokens trained\n",
        best_chart(view),
    ]
    return "\n".join(parts)


def progress_markdown(views: Sequence[RunView]) -> str:
    """PROGRESS.md: the comparison across runs, then each run's charts and tables."""
    parts = [
        "# Training progress\n",
        "Derived by `summarize` from each run's `sessions.jsonl` and `cache/metadata.json`; "
        "regenerated on every session, do not edit by hand.\n",
        "## Runs compared\n",
        comparison_table(views),
    ]
    parts += [run_section(view) for view in views]
    return "\n".join(parts)


def readme_block(views: Sequence[RunView], readme: Path, progress: Path) -> str:
    link = Path(os.path.relpath(progress, readme.parent)).as_posix()
    return "\n".join(
        [
            "### Training progress\n",
            comparison_table(views),
            f"Charts, sessions and resets: [{link}]({link}).\n",
        ]
    )


def replace_readme_block(path: Path, block: str) -> str:
    """The README text with the marked block replaced; everything outside the markers kept byte for byte."""
    try:
        text = read_bytes(path).decode("utf-8")
    except FileNotFoundError as exc:
        raise NanechoError("README not found", path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise NanechoError(f"cannot read README: {exc}", path) from exc
    starts, ends = text.count(README_START), text.count(README_END)
    if starts != 1 or ends != 1:
        raise NanechoError(
            f"expected one {README_START} and one {README_END} marker, found {starts} and {ends}", path
        )
    if text.index(README_END) < text.index(README_START):
        raise NanechoError(f"{README_END} comes before {README_START}", path)
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    newline = "\r\n" if "\r\n" in text else "\n"
    body = block.strip("\n").replace("\n", newline)
    return head + README_START + newline + body + newline + README_END + tail


def session_figures(record: dict[str, Any], row: SessionRow | None) -> str:
    resumed = record["resume_source"] + (f" (`{record['resumed_from']}`)" if record["resumed_from"] else "")
    figures = [
        ["session", f"`{record['session_id']}`"],
        ["trigger / preset", f"{record['trigger']} / {record['preset']}"],
        ["resumed from", resumed],
        ["iterations", f"{record['start_iteration']} → {record['end_iteration']}"],
        ["val loss", f"{fmt_loss(record['start_val_loss'])} → {fmt_loss(record['end_val_loss'])}"],
        ["best val loss (session)", fmt_loss(record["best_val_loss"])],
        ["tokens/s", fmt_count(record["tokens_per_s"])],
        ["wall time", fmt_duration(record["wall_s"])],
        ["stop reason", record["stop_reason"]],
    ]
    if row is not None and row.flags:
        figures.append(["flags", flag_text(row)])
    return md_table(["figure", "value"], figures)


def step_summary_markdown(views: Sequence[RunView], session: dict[str, Any] | None) -> str:
    """$GITHUB_STEP_SUMMARY: this session's figures (when known) and each run's charts."""
    parts = []
    if session is not None and not any(v.name == session["run"] for v in views):
        # the session's run is not among those summarized: its own figures, no charts to show
        return f"## NanEcho: {session['run']}\n\n### This session\n\n" + session_figures(session, None)
    for view in views:
        record = session if session is not None else (view.sessions[-1].record if view.sessions else None)
        parts.append(f"## NanEcho: {view.name}\n")
        if record is not None:
            row = next((r for r in view.sessions if r.session_id == record["session_id"]), None)
            parts.append("### This session\n" if session is not None else "### Latest session\n")
            parts.append(session_figures(record, row))
        parts.append(best_line(view))
        recent = view.sessions[-RECENT_SESSIONS:]
        parts.append(sessions_chart(recent, f"{view.name}: val loss per session (start, end)"))
        parts.append(sessions_table(recent))
        parts.append(best_chart(view))
    return "\n".join(parts)

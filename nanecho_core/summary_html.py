"""A self-contained HTML dashboard: inline SVG charts, no network, no external scripts.

Built from string templates; every piece of text from the data goes through html.escape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

from nanecho_core.summary import RECENT_SESSIONS, RunView, downsample
from nanecho_core.summary_md import comparison_rows, flag_text, fmt_count, fmt_duration, fmt_loss

MAX_CURVE_POINTS = 1500  # per chart: enough for the eye, bounded for 10,000-session histories
MAX_MARKERS = 400  # session boundaries drawn (evenly thinned beyond this)
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")  # red is kept for resets
MARKED_POINTS = 60  # series this short also get a dot per point (a one-session run is still visible)
RESET_COLOR = "#d62728"
WIDTH, HEIGHT = 860, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 40

# The page proves it rendered: the script counts non-empty SVG paths and records the result on
# <body data-rendered="…">, which the headless-browser test reads back from the DOM.
_CHECK_SCRIPT = """
(function () {
  var paths = document.querySelectorAll("svg path.series");
  var drawn = 0;
  for (var i = 0; i < paths.length; i++) {
    var d = paths[i].getAttribute("d") || "";
    var box = paths[i].getBBox();
    if (d.length > 2 && (box.width > 0 || box.height > 0)) { drawn++; }
  }
  document.body.setAttribute("data-rendered", drawn > 0 && drawn === paths.length ? "ok" : "empty");
  document.body.setAttribute("data-paths", String(drawn));
})();
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; } tr.flagged td { background: #fdecea; }
svg { background: #fcfcfc; border: 1px solid #ddd; }
.legend span { display: inline-block; margin-right: 14px; } .legend i { display: inline-block; width: 14px;
  height: 3px; vertical-align: middle; margin-right: 4px; }
.note { color: #666; font-size: 12px; } .scroll { overflow-x: auto; max-width: 100%; }
"""


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str
    dashed: bool = False


@dataclass
class Chart:
    """A line chart: series, vertical boundary lines, and flagged x positions drawn in red."""

    title: str
    x_label: str
    y_label: str
    series: list[Series]
    boundaries: list[float] = field(default_factory=list)
    flagged: list[tuple[float, str]] = field(default_factory=list)
    log_y: bool = False


def _nice(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return fmt_count(value)
    return f"{value:.3g}"


def thin(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ~`limit` points evenly picked, keeping every NaN line break (a reset stays a gap)."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    keep = {round(i * step) for i in range(limit)}
    keep.update(i for i, p in enumerate(points) if p[1] != p[1])
    return [points[i] for i in sorted(keep)]


def _path(
    points: Sequence[tuple[float, float]], sx: Callable[[float], float], sy: Callable[[float], float]
) -> str:
    """SVG path data; a NaN y breaks the line (a reset starts a new segment)."""
    parts: list[str] = []
    pen_down = False
    for x, y in points:
        if math.isnan(y):
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{sx(x):.1f},{sy(y):.1f}")
        pen_down = True
    if len(parts) == 1:  # a single point still shows: a short horizontal tick
        parts.append("l4,0")
    return " ".join(parts)


def svg_chart(chart: Chart) -> str:
    """Inline SVG for `chart` (an empty frame with a note when there is nothing to draw)."""
    # Thin first: a 10,000-session history has ~200,000 evaluations, the eye needs 1,500.
    thinned = [
        [p for p in thin(s.points, MAX_CURVE_POINTS) if p[1] != p[1] or p[1] > 0 or not chart.log_y]
        for s in chart.series
    ]
    all_points = [p for pts in thinned for p in pts if p[1] == p[1]]
    title = escape(chart.title)
    if not all_points:
        return f'<p class="note">{title}: no data yet.</p>'
    xs = [p[0] for p in all_points] + chart.boundaries
    ys = [p[1] for p in all_points]
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:
        x1 = x0 + 1
    fy = (lambda v: math.log10(v)) if chart.log_y else (lambda v: v)
    y0, y1 = fy(min(ys)), fy(max(ys))
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    if not chart.log_y:
        y0 = max(y0, 0.0) if min(ys) >= 0 else y0
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return PAD_T + (1 - (fy(y) - y0) / (y1 - y0)) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}">',
        f"<title>{title}</title>",
    ]
    for i in range(5):  # grid and y ticks
        frac = i / 4
        yv = y0 + (y1 - y0) * frac
        label = _nice(10**yv if chart.log_y else yv)
        py = PAD_T + (1 - frac) * plot_h
        out.append(f'<line x1="{PAD_L}" y1="{py:.1f}" x2="{WIDTH - PAD_R}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{py + 4:.1f}" font-size="10" text-anchor="end">{label}</text>')
        px = PAD_L + frac * plot_w
        out.append(
            f'<text x="{px:.1f}" y="{HEIGHT - PAD_B + 14}" font-size="10" text-anchor="middle">'
            f"{_nice(x0 + (x1 - x0) * frac)}</text>"
        )
    for bx in downsample(sorted(set(chart.boundaries)), MAX_MARKERS):
        out.append(
            f'<line class="boundary" x1="{sx(bx):.1f}" y1="{PAD_T}" x2="{sx(bx):.1f}" '
            f'y2="{PAD_T + plot_h}" stroke="#bbb" stroke-dasharray="2,3"/>'
        )
    for fx, label in downsample(chart.flagged, MAX_MARKERS):
        out.append(
            f'<line class="flagged" x1="{sx(fx):.1f}" y1="{PAD_T}" x2="{sx(fx):.1f}" y2="{PAD_T + plot_h}" '
            f'stroke="{RESET_COLOR}" stroke-width="1.5"><title>{escape(label)}</title></line>'
        )
    for series, pts in zip(chart.series, thinned, strict=True):
        if not pts:
            continue
        d = _path(pts, sx, sy)
        dash = ' stroke-dasharray="5,3"' if series.dashed else ""
        out.append(
            f'<path class="series" d="{d}" fill="none" stroke="{series.color}" stroke-width="1.6"{dash}>'
            f"<title>{escape(series.name)}</title></path>"
        )
        drawn = [p for p in pts if not math.isnan(p[1])]
        if len(drawn) <= MARKED_POINTS:
            out += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{series.color}"/>' for x, y in drawn
            ]
    out.append(
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
        f'<text x="{PAD_L + plot_w / 2:.1f}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">'
        f"{escape(chart.x_label)}</text>"
        f'<text x="12" y="{PAD_T + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {PAD_T + plot_h / 2:.1f})">{escape(chart.y_label)}</text>'
    )
    out.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{s.color}"></i>{escape(s.name)}</span>' for s in chart.series if s.points
    )
    if chart.flagged:
        legend += f'<span><i style="background:{RESET_COLOR}"></i>reset / regression</span>'
    return f"<h3>{title}</h3>\n" + "\n".join(out) + f'\n<div class="legend">{legend}</div>'


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], flagged: Sequence[bool] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="flagged"' if i < len(flagged) and flagged[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'  # wide tables scroll on their own, not the page


def page(title: str, body: str) -> str:
    """The HTML shell: a CSP that forbids every network fetch, inline style and check script."""
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n{body}\n<script>{_CHECK_SCRIPT}</script>\n</body>\n</html>\n"
    )


def run_chart(view: RunView, color: str) -> Chart:
    """Val loss of every evaluation across sessions, on a cumulative-token axis."""
    curve: list[tuple[float, float]] = []
    best: list[tuple[float, float]] = []
    low: float | None = None
    boundaries, flagged = [], []
    for row in view.sessions:
        boundaries.append(float(row.tokens_before))
        if row.flags:
            flagged.append((float(row.tokens_before), f"session #{row.index}: {flag_text(row)}"))
            if row.is_reset and curve:
                curve.append((float(row.tokens_before), math.nan))
        for x, val in row.eval_curve():
            curve.append((x, val))
            low = val if low is None or val < low else low
            best.append((x, low))
    return Chart(
        title=f"{view.name}: val loss over tokens trained",
        x_label="tokens trained (cumulative, all sessions)",
        y_label="val loss",
        # best-so-far first, dashed: where every eval is a new best the val-loss line stays on top
        series=[
            Series("best so far", best, "#555555", dashed=True),
            Series("val loss (each eval)", curve, color),
        ],
        boundaries=boundaries,
        flagged=flagged,
    )


def sessions_html(view: RunView) -> str:
    rows = view.sessions[-RECENT_SESSIONS * 2 :]
    header = [
        "#",
        "session",
        "started",
        "preset",
        "source",
        "iterations",
        "val loss",
        "tokens",
        "tok/s",
        "wall",
    ]
    header += ["stop", "flags"]
    body = []
    for row in rows:
        rec = row.record
        body.append(
            [
                str(row.index),
                row.session_id,
                rec["started_at"],
                rec["preset"],
                rec["resume_source"] + (f" {rec['resumed_from']}" if rec["resumed_from"] else ""),
                f"{rec['start_iteration']} → {rec['end_iteration']}",
                f"{fmt_loss(rec['start_val_loss'])} → {fmt_loss(rec['end_val_loss'])}",
                fmt_count(row.tokens),
                fmt_count(rec["tokens_per_s"]),
                fmt_duration(rec["wall_s"]),
                rec["stop_reason"],
                flag_text(row).replace("**", ""),
            ]
        )
    note = f'<p class="note">Last {len(rows)} of {len(view.sessions)} sessions.</p>'
    return note + html_table(header, body, [bool(r.flags) for r in rows])


def dashboard_html(views: Sequence[RunView]) -> str:
    """The whole dashboard: comparison, an all-runs best-loss chart, then each run."""
    header, rows = comparison_rows(views)
    parts = ["<h2>Runs compared</h2>", html_table(header, [[c.replace("`", "") for c in r] for r in rows])]
    charts = [run_chart(v, PALETTE[i % len(PALETTE)]) for i, v in enumerate(views)]
    if len(views) > 1:
        overlay = Chart(
            title="Best val loss over tokens trained, all runs",
            x_label="tokens trained",
            y_label="best val loss",
            series=[
                Series(v.name, c.series[0].points, c.series[1].color)
                for v, c in zip(views, charts, strict=True)
            ],
        )
        parts.append(svg_chart(overlay))
    for view, chart in zip(views, charts, strict=True):
        s = view.summary
        parts.append(f"<h2>{escape(view.name)}</h2>")
        parts.append(
            f"<p>Best val loss <b>{escape(fmt_loss(s['best']['val_loss']))}</b>"
            f"{escape(' (' + s['best']['checkpoint_id'] + ')' if s['best']['checkpoint_id'] else '')}; "
            f"{s['sessions']} sessions, {s['iterations_trained']} iterations, "
            f"{escape(fmt_count(s['tokens_trained']))} tokens, {escape(fmt_duration(s['wall_s']))}; "
            f"resets {s['resets']}, regressions {s['regressions']}. "
            "Dashed lines: session boundaries; red lines: resets and regressions.</p>"
        )
        parts.append(svg_chart(chart))
        parts.append(sessions_html(view))
    return page("NanEcho training progress", "\n".join(parts))

"""Specs for the HTML dashboard: self-contained, escaped, boundaries and resets marked, bounded."""

from __future__ import annotations

import re
from pathlib import Path

from nanecho_core.summary import build_run
from nanecho_core.summary_html import Chart, Series, dashboard_html, svg_chart
from tests.summary_support import one_session_full_run, session, three_session_run, write_run


def test_dashboard_is_one_self_contained_file(tmp_path: Path) -> None:
    page = dashboard_html([build_run(three_session_run(tmp_path))])
    assert page.startswith("<!DOCTYPE html>")
    # the only URL is the SVG namespace; nothing is fetched: no src=, href=, @import or url()
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    for fetcher in ("src=", "href=", "@import", "url(", "<link", "<iframe", "<img"):
        assert fetcher not in page
    assert "Content-Security-Policy\" content=\"default-src 'none';" in page


def test_dashboard_marks_every_session_boundary_and_the_reset(tmp_path: Path) -> None:
    page = dashboard_html([build_run(three_session_run(tmp_path))])
    assert page.count('class="boundary"') == 3
    assert page.count('<line class="flagged"') == 1  # the chart's red line
    assert '<tr class="flagged"><td>3</td>' in page
    assert page.count('<path class="series"') == 2  # val loss per eval, best so far


def test_a_reset_breaks_the_val_loss_line(tmp_path: Path) -> None:
    page = dashboard_html([build_run(three_session_run(tmp_path))])
    paths = re.findall(r'<path class="series" d="([^"]+)"', page)
    assert len(paths) == 2  # best so far (drawn first, underneath), then the val loss of each eval
    assert paths[0].count("M") == 1
    assert paths[1].count("M") == 2  # the val-loss line: one segment before the reset, one after


def test_all_text_is_escaped() -> None:
    chart = Chart(
        "<script>alert(1)</script>", "x & y", "<y>", [Series("a<b", [(0.0, 1.0), (1.0, 2.0)], "#000")]
    )
    svg = svg_chart(chart)
    assert "<script>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg and "x &amp; y" in svg and "a&lt;b" in svg


def test_several_runs_get_an_overlay_of_their_best_curves(tmp_path: Path) -> None:
    ci = three_session_run(tmp_path)
    full = one_session_full_run(tmp_path)
    page = dashboard_html([build_run(ci), build_run(full)])
    assert "Best val loss over tokens trained, all runs" in page
    assert page.count('<path class="series"') == 2 + 2 + 2


def test_dashboard_size_is_bounded_for_long_histories(tmp_path: Path) -> None:
    def page_for(count: int, root: Path) -> str:
        sessions = [session(0, 0, 100, source="fresh", start_loss=None, end_loss=3.0)]
        for i in range(1, count):
            rec = session(0, i * 100, i * 100 + 100, start_loss=3.0 - (i - 1) * 1e-4, end_loss=3.0 - i * 1e-4)
            stamp = f"2026-{11 + i // 40000:02d}-{24 + i // 1440 % 6:02d}T{i // 60 % 24:02d}:{i % 60:02d}"
            rec.update(
                session_id=f"20261124T000000Z-{i:06x}", started_at=f"{stamp}:00Z", ended_at=f"{stamp}:30Z"
            )
            sessions.append(rec)
        sessions[0]["ended_at"] = "2026-11-24T00:00:30Z"
        return dashboard_html([build_run(write_run(root, sessions))])

    small, large = page_for(100, tmp_path / "s"), page_for(3000, tmp_path / "l")
    assert len(large) < len(small) * 6
    assert large.count('class="boundary"') == 400

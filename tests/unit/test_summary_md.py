"""Specs for the Markdown views: PROGRESS.md charts and tables, the README block, the step summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanecho_core.errors import NanechoError
from nanecho_core.summary import build_run
from nanecho_core.summary_md import (
    README_END,
    README_START,
    comparison_table,
    fmt_count,
    fmt_loss,
    grid_best,
    mermaid_number,
    nice_step,
    ordinal,
    progress_markdown,
    replace_readme_block,
    run_section,
    step_summary_markdown,
)
from tests.summary_support import one_session_full_run, session, three_session_run, write_run


def test_run_section_has_a_val_loss_chart_with_the_sessions_table_beside_it(tmp_path: Path) -> None:
    section = run_section(build_run(three_session_run(tmp_path)))
    assert (
        "```mermaid\n"
        '%%{init: {"themeVariables": {"xyChart": {"plotColorPalette": "#9aa0a6, #1f77b4"}}}}%%\n'
        "xychart-beta\n"
        '    title "nanecho-cached-ci: val loss per session (start, end)"\n'
        '    x-axis "session" ["s1", "s2", "s3 reset"]\n'
        '    y-axis "val loss" 1.97 --> 2.63\n'
        "    line [2.5, 2.5, 2.6]\n"
        "    line [2.5, 2, 2.6]\n"
        "```\n"
    ) in section
    assert (
        "| 3 | `20261124T030000Z-000003` | 2026-11-24T03:00:00Z | ci | fresh | 0 → 100 | — → 2.6 | 76.8k | 25k "
        "| 1m00s | budget_iters | **reset**: fresh start after iteration 200 |"
    ) in section
    assert "**Best:** val loss 2 at iteration 200." in section
    assert "resets: 1, regressions: 0." in section


def test_best_chart_samples_a_fixed_token_grid_and_lists_each_new_best(tmp_path: Path) -> None:
    section = run_section(build_run(three_session_run(tmp_path)))
    # 230.4k tokens in at most 24 points: a 20k grid, 0 … 240k; new bests at 76.8k (2.5) and 153.6k (2)
    assert '    x-axis "tokens trained (k)" 0 --> 240\n' in section
    assert "    line [" + ", ".join(["2.5"] * 8 + ["2"] * 5) + "]\n" in section
    assert "| tokens trained | new best val loss |\n| --- | --- |\n| 76.8k | 2.5 |\n| 154k | 2 |\n" in section
    assert "<summary>Chart data: each new best</summary>" in section


def test_best_table_says_when_it_lists_only_every_kth_new_best(tmp_path: Path) -> None:
    # 23 sessions, each ending on a new best: 23 improvements, more than the table's 16 rows.
    sessions = [session(1, 0, 10, source="fresh", start_loss=None, end_loss=3.0)]
    sessions += [
        session(h, (h - 1) * 10, h * 10, start_loss=3.0, end_loss=3.0 - h / 100) for h in range(2, 24)
    ]
    view = build_run(write_run(tmp_path, sessions))
    assert len(view.curve) == 23
    section = run_section(view)
    assert "<summary>Chart data: every 2nd new best and the last</summary>" in section
    rows = section.split("| tokens trained | new best val loss |\n| --- | --- |\n")[1].split("\n\n")[0]
    expected = view.curve[::2]  # every 2nd: 0, 2, …, 22, which is also the last
    assert rows.splitlines() == [f"| {fmt_count(x)} | {fmt_loss(v)} |" for x, v in expected]


def test_grid_samples_keep_their_values_as_the_run_grows() -> None:
    curve = [(0.0, 5.0), (1000.0, 4.0), (5000.0, 3.0)]
    before = grid_best(curve, 9000.0, 24)
    after = grid_best([*curve, (11000.0, 2.5)], 11000.0, 24)
    assert [x for x, _ in before] == [i * 500.0 for i in range(19)]
    assert after[: len(before) - 1] == before[:-1]  # only the newest point is new
    assert after[-1] == (11000.0, 2.5)
    assert nice_step(230400, 24) == 20000 and nice_step(99, 24) == 5


def test_sessions_table_shows_only_the_last_twenty(tmp_path: Path) -> None:
    sessions = [session(1, 0, 10, source="fresh", start_loss=None, end_loss=3.0)]
    sessions += [session(h, (h - 1) * 10, h * 10, start_loss=3.0, end_loss=3.0) for h in range(2, 24)]
    section = run_section(build_run(write_run(tmp_path, sessions)))
    assert "### Val loss per session (last 20)" in section
    assert "| 4 | `" in section and "| 3 | `" not in section
    assert '"s4", ' in section and '"s3"' not in section


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 32, 64, 112, 1024)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "32nd", "64th", "112th", "1024th",
    ]  # fmt: skip


def test_mermaid_numbers_never_use_exponent_notation() -> None:
    assert mermaid_number(6.68e-07) == "0.000000668"
    assert mermaid_number(2.0) == "2"
    assert mermaid_number(12345678.0) == "12345678"
    assert mermaid_number(1.23456789) == "1.23457"


def test_comparison_table_lines_up_runs_at_a_common_token_count(tmp_path: Path) -> None:
    ci = write_run(
        tmp_path,
        [
            session(1, 0, 100, source="fresh", start_loss=None, end_loss=2.5),
            session(2, 100, 200, start_loss=2.5, end_loss=2.0),
        ],
    )
    full = one_session_full_run(tmp_path)
    table = comparison_table([build_run(ci), build_run(full)])
    lines = table.splitlines()
    assert lines[0] == (
        "| run | preset | sessions | latest iter | tokens | wall | tok/s | best val loss | best @ 154k tokens "
        "| best checkpoint | resets | regressions | trend |"
    )
    assert (
        lines[2]
        == "| nanecho-cached-ci | ci | 2 | 200 | 154k | 2m00s | 25k | 2 | 2 | — | 0 | 0 | improving (-0.5) |"
    )
    # the full run's only evaluation came after 307k tokens: nothing to compare at 154k
    assert (
        lines[3]
        == "| nanecho-cached-full | full | 1 | 400 | 307k | 1m00s | 25k | 1.5 | — | — | 0 | 0 | unknown |"
    )


def test_progress_md_compares_runs_then_details_each(tmp_path: Path) -> None:
    text = progress_markdown([build_run(three_session_run(tmp_path))])
    assert text.startswith("# Training progress\n")
    assert text.index("## Runs compared") < text.index("## nanecho-cached-ci")
    assert text.count("xychart-beta\n") == 2 and text.count("```mermaid\n") == 2
    assert "generated at" not in text.lower()  # no wall-clock stamps: derived output is reproducible


README = "# Project\r\n\r\nIntro.\r\n<!-- nanecho:progress:start -->\r\nold\r\n<!-- nanecho:progress:end -->\r\nTail.\r\n"


def test_readme_block_is_replaced_and_everything_else_kept_byte_for_byte(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_bytes(README.encode())
    updated = replace_readme_block(readme, "### Training progress\n\nnew table\n")
    head, tail = README.split("old")
    assert updated.startswith(head.rsplit("\r\n", 1)[0])
    assert updated == (
        "# Project\r\n\r\nIntro.\r\n<!-- nanecho:progress:start -->\r\n### Training progress\r\n\r\nnew table\r\n"
        "<!-- nanecho:progress:end -->\r\nTail.\r\n"
    )
    assert updated.endswith(tail)
    readme.write_text(updated, newline="")
    assert replace_readme_block(readme, "### Training progress\n\nnew table\n") == updated  # idempotent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# no markers\n", "found 0 and 0"),
        (f"{README_START}\n{README_START}\n{README_END}\n", "found 2 and 1"),
        (f"{README_END}\nx\n{README_START}\n", "comes before"),
    ],
)
def test_readme_without_exactly_one_ordered_marker_pair_is_an_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(NanechoError, match=message) as caught:
        replace_readme_block(readme, "x")
    assert str(caught.value).startswith(f"Error: {readme}: ")


def test_step_summary_shows_this_sessions_figures_and_the_runs_charts(tmp_path: Path) -> None:
    view = build_run(three_session_run(tmp_path))
    step = view.sessions[-1].record
    text = step_summary_markdown([view], step)
    assert text.startswith("## NanEcho: nanecho-cached-ci\n")
    assert "### This session\n" in text
    assert "| iterations | 0 → 100 |" in text
    assert "| val loss | — → 2.6 |" in text
    assert "| flags | **reset**: fresh start after iteration 200 |" in text
    assert text.count("xychart-beta") == 2
    assert "### Latest session\n" in step_summary_markdown([view], None)

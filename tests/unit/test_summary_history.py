"""Specs for importing the older system's 243-version summary history and flagging its resets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanecho_core.errors import NanechoError
from nanecho_core.history import legacy_html, legacy_markdown, load_legacy_history

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "training_summary_history.jsonl"


def _backward_jumps_in_fixture() -> list[int]:
    """Computed independently of the code under test: line numbers whose iteration went down."""
    iterations = [json.loads(line)["summary"]["best_checkpoint"]["iteration"] for line in FIXTURE.open()]
    return [i + 1 for i in range(1, len(iterations)) if iterations[i] < iterations[i - 1]]


def test_every_backward_jump_in_iterations_is_flagged_as_a_reset() -> None:
    history = load_legacy_history(FIXTURE)
    jumps = _backward_jumps_in_fixture()
    assert history["versions"] == 243
    assert history["resets"] == len(jumps) == 9
    assert [v["version"] for v in history["history"] if v["reset"]] == jumps


def test_history_is_normalized_per_version() -> None:
    history = load_legacy_history(FIXTURE)
    first, reset = history["history"][0], history["history"][162]
    assert first == {
        "version": 1,
        "commit_date": "2026-02-23T00:14:44Z",
        "workflow_run": "69",
        "training_type": ".training-progress/nanecho-cached-ci",
        "iteration": 500,
        "best_val_loss": 7.507141332626343,
        "best_checkpoint_id": "ckpt_20260222_225105_500_22deff1b_9470fbb7",
        "total_checkpoints": 7,
        "cache_size_mb": 1745.029242515564,
        "max_iters": 500,
        "previous_iteration": None,
        "reset": False,
        "lost_iterations": 0,
    }
    assert (reset["previous_iteration"], reset["iteration"], reset["reset"]) == (42500, 500, True)
    assert reset["lost_iterations"] == 42000
    assert (history["max_iteration"], history["final_iteration"]) == (42500, 13000)


def test_commit_dates_with_offsets_are_normalized_to_utc() -> None:
    version = load_legacy_history(FIXTURE)["history"][26]
    assert version["commit_date"] == "2026-03-04T03:11:03Z"  # the fixture says 05:11:03+02:00


def test_markdown_lists_every_reset_and_the_chart_keeps_each_jump() -> None:
    text = legacy_markdown(load_legacy_history(FIXTURE))
    assert "**9 resets**" in text
    assert "| 163 | 2026-04-16T20:15:47Z | 328 | 42500 → 500 | 42000 | 7.409 |" in text
    labels = text.split('x-axis "version" [')[1].split("]")[0]
    for version in _backward_jumps_in_fixture():
        assert f'"v{version} reset"' in labels
        assert f'"v{version - 1}"' in labels or f'"v{version - 1} reset"' in labels


def test_html_marks_each_reset_on_both_charts() -> None:
    page = legacy_html(load_legacy_history(FIXTURE))
    assert page.count('<line class="flagged"') == 2 * 9
    assert "<b>9 resets</b>" in page


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("{not json", "line 2"),
        ('{"commit_date": "yesterday", "summary": {}}', "line 2: $.commit_date"),
        (
            '{"commit_date": "2026-01-01T00:00:00Z", "summary": {"best_checkpoint": {"iteration": "5"}}}',
            "line 2: $.summary.best_checkpoint.iteration",
        ),
        ("[]", "line 2"),
    ],
)
def test_a_malformed_history_line_is_an_error_naming_file_and_line(
    tmp_path: Path, line: str, where: str
) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text(FIXTURE.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(NanechoError) as caught:
        load_legacy_history(path)
    assert str(caught.value).startswith(f"Error: {path}:{where}: ")


def test_an_empty_or_missing_history_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(NanechoError, match="no history lines"):
        load_legacy_history(tmp_path / "empty.jsonl")
    with pytest.raises(NanechoError, match="file not found"):
        load_legacy_history(tmp_path / "absent.jsonl")


def test_a_line_separator_inside_a_json_string_does_not_split_the_record(tmp_path: Path) -> None:
    # U+2028 and U+0085 are legal raw inside JSON strings; str.splitlines() would cut the line there.
    first = json.loads(FIXTURE.read_text().splitlines()[0])
    first["summary"]["note"] = "before\u2028after\x85end"
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(first, ensure_ascii=False) + "\n", encoding="utf-8")
    history = load_legacy_history(path)
    assert history["versions"] == 1
    assert history["history"][0]["iteration"] == first["summary"]["best_checkpoint"]["iteration"]

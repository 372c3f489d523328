"""Replay the older system's 243 committed summaries through the regression guard.

Its summary silently went from iteration 42,500 back to 500 (and six more such resets) after
cache misses. Each drop becomes a selection where the index still remembers the lost best
checkpoint and only the new one is available: every one of them must be refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanecho_core.errors import NanechoError
from tests.factories import make_entry
from tests.unit.test_selection import seed_run, select

HISTORY = Path(__file__).resolve().parents[1] / "fixtures" / "training_summary_history.jsonl"


def transitions() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    bests = []
    for line in HISTORY.read_text().splitlines():
        best = json.loads(line)["summary"].get("best_checkpoint")
        if best and best.get("iteration") is not None and best.get("val_loss"):
            bests.append(best)
    return [(a, b) for a, b in zip(bests, bests[1:], strict=False) if a["id"] != b["id"]]


def _scenario(tmp_path: Path, before: dict[str, Any], after: dict[str, Any]) -> Any:
    lost = make_entry("20260101T000000Z-aaaaaa", before["iteration"], before["val_loss"], status="missing",
                      created_at="2026-01-01T00:00:00Z")  # fmt: skip
    have = make_entry("20260102T000000Z-bbbbbb", after["iteration"], after["val_loss"],
                      created_at="2026-01-02T00:00:00Z")  # fmt: skip
    return seed_run(tmp_path, [lost, have])


def test_history_has_the_seven_silent_resets() -> None:
    drops = [(a["iteration"], b["iteration"]) for a, b in transitions() if b["iteration"] < a["iteration"]]
    assert (42500, 500) in drops
    assert len([d for d in drops if d[0] - d[1] >= 1000]) == 7


@pytest.mark.parametrize(
    ("before", "after"),
    [(a, b) for a, b in transitions() if a["iteration"] - b["iteration"] >= 1000],
    ids=lambda best: str(best["iteration"]),
)
def test_every_historical_reset_is_refused(
    tmp_path: Path, before: dict[str, Any], after: dict[str, Any]
) -> None:
    paths = _scenario(tmp_path, before, after)
    with pytest.raises(NanechoError, match="refusing to resume"):
        select(paths)
    assert select(paths, allow_fresh=True)["regression"] is True


def test_forward_progress_without_loss_regression_passes(tmp_path: Path) -> None:
    forward = [
        (a, b)
        for a, b in transitions()
        if b["iteration"] >= a["iteration"] and b["val_loss"] <= a["val_loss"] * 1.05
    ]
    assert len(forward) >= 10
    for n, (before, after) in enumerate(forward):
        (tmp_path / str(n)).mkdir()
        doc = select(_scenario(tmp_path / str(n), before, after))
        assert doc["regression"] is False, (before, after)

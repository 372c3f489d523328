"""Specs for deriving training_summary.json: counts, best, trend, resets and regressions, determinism."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from nanecho_core import fastschema, schema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import dumps_line
from nanecho_core.summary import (
    FRESH_RESTART,
    OLDER_CHECKPOINT,
    WORSE_CHECKPOINT,
    build_run,
    downsample,
    regenerate,
    stable_sample,
)
from nanecho_core.summary_doc import summary_document
from tests.summary_support import CI, make_entry, session, three_session_run, write_run


def test_summary_counts_sessions_iterations_tokens_wall_time_and_sources(tmp_path: Path) -> None:
    view = build_run(three_session_run(tmp_path))
    s = view.summary
    assert (s["run"], s["dir"], s["preset"], s["presets"]) == (
        "nanecho-cached-ci",
        ".training-progress/nanecho-cached-ci",
        "ci",
        ["ci"],
    )
    assert s["sessions"] == 3
    assert s["iterations_trained"] == 300
    assert (s["latest_iteration"], s["max_iteration"]) == (100, 200)
    assert s["tokens_trained"] == 300 * 768  # factories: tokens_seen = iteration * 768
    assert s["wall_s"] == 180.0
    assert s["tokens_per_s_median"] == 25000.0
    assert s["resume_sources"] == {"cache": 1, "artifact": 0, "fresh": 2, "init": 0}
    assert s["stop_reasons"] == {
        "budget_iters": 3,
        "budget_time": 0,
        "signal": 0,
        "early_stop": 0,
        "error": 0,
    }
    assert (s["first_started_at"], s["last_ended_at"]) == ("2026-11-24T01:00:00Z", "2026-11-24T03:30:00Z")
    assert s["latest"] == {
        "session_id": "20261124T030000Z-000003",
        "checkpoint_id": None,
        "end_iteration": 100,
        "end_val_loss": 2.6,
        "ended_at": "2026-11-24T03:30:00Z",
    }
    assert s["best"] == {
        "source": "sessions",
        "checkpoint_id": None,
        "session_id": "20261124T020000Z-000002",
        "iteration": 200,
        "val_loss": 2.0,
    }
    assert s["curve"] == [[76800, 2.5], [153600, 2.0]]
    assert "recent" not in s  # the per-session rows live in PROGRESS.md; the JSON stays small


def test_fresh_start_after_progress_is_flagged_as_reset_exactly_once(tmp_path: Path) -> None:
    paths = write_run(
        tmp_path,
        [
            session(1, 0, 100, source="fresh", start_loss=None, end_loss=2.5),
            session(2, 100, 200, start_loss=2.5, end_loss=2.0),
            session(3, 0, 100, source="fresh", start_loss=None, end_loss=2.6),
            session(4, 100, 200, start_loss=2.6, end_loss=2.1),  # continues the new line: not flagged again
        ],
    )
    view = build_run(paths)
    assert [r.flags for r in view.sessions] == [(), (), (FRESH_RESTART,), ()]
    assert view.summary["resets"] == 1
    assert view.summary["regressions"] == 0
    assert view.summary["flagged"] == [
        {
            "index": 3,
            "session_id": "20261124T030000Z-000003",
            "flags": ["fresh_restart"],
            "resume_source": "fresh",
            "start_iteration": 0,
            "prior_max_iteration": 200,
            "resumed_val_loss": None,
            "best_known_val_loss": 2.0,
            "regression_allowed": False,
        }
    ]


def test_first_fresh_session_of_a_run_is_not_a_reset(tmp_path: Path) -> None:
    view = build_run(write_run(tmp_path, [session(1, 0, 100, source="fresh", start_loss=None)]))
    assert view.sessions[0].flags == ()
    assert view.summary["resets"] == 0


def test_resume_below_the_last_end_iteration_is_flagged_older_checkpoint(tmp_path: Path) -> None:
    paths = write_run(
        tmp_path,
        [
            session(1, 0, 300, source="fresh", start_loss=None, end_loss=2.0),
            session(2, 100, 200, source="artifact", start_loss=2.0, end_loss=1.9),  # from an older artifact
        ],
    )
    row = build_run(paths).sessions[1]
    assert row.flags == (OLDER_CHECKPOINT,)
    assert row.prior_max_iteration == 300


def test_sessions_racing_from_the_same_checkpoint_are_not_resets(tmp_path: Path) -> None:
    """Two CI jobs that overlap in time both resumed what was best when they started."""
    first = session(1, 0, 100, source="fresh", start_loss=None, end_loss=2.5)
    a = session(2, 100, 200, start_loss=2.5, end_loss=2.0, minutes=50)
    b = session(2, 100, 200, start_loss=2.5, end_loss=2.1, minutes=40)
    b["session_id"], b["started_at"] = "20261124T021000Z-bbbbbb", "2026-11-24T02:10:00Z"
    view = build_run(write_run(tmp_path, [first, a, b]))
    assert [r.flags for r in view.sessions] == [(), (), ()]


def test_resuming_a_checkpoint_worse_than_the_best_known_is_a_regression(tmp_path: Path) -> None:
    good = make_entry("20261124T020000Z-000002", 200, 1.5)
    worse = make_entry("20261124T010000Z-000001", 100, 2.5)
    paths = write_run(
        tmp_path,
        [
            session(1, 0, 100, source="fresh", start_loss=None, end_loss=2.5),
            session(2, 100, 200, start_loss=2.5, end_loss=1.5, resumed_from=worse["id"]),
            # the cache lost the best checkpoint; the artifact tier had only the older one
            session(
                3,
                200,
                300,
                source="artifact",
                start_loss=2.5,
                end_loss=2.2,
                resumed_from=worse["id"],
                regression_allowed=True,
            ),
        ],
        entries=[worse, good],
        best_id=good["id"],
    )
    view = build_run(paths)
    row = view.sessions[2]
    assert row.flags == (WORSE_CHECKPOINT,)
    assert (row.resumed_val_loss, row.best_known_val_loss) == (2.5, 1.5)
    assert view.summary["regressions"] == 1
    assert view.summary["flagged"][0]["regression_allowed"] is True
    assert view.summary["best"] == {
        "source": "index",
        "checkpoint_id": good["id"],
        "session_id": "20261124T020000Z-000002",
        "iteration": 200,
        "val_loss": 1.5,
    }
    assert view.summary["checkpoints"] == {"indexed": 2, "ok": 2, "missing": 0, "corrupt": 0, "pruned": 0}


def test_eval_noise_within_one_percent_is_not_a_regression(tmp_path: Path) -> None:
    paths = write_run(
        tmp_path,
        [
            session(1, 0, 100, source="fresh", start_loss=None, end_loss=2.0),
            session(2, 100, 200, start_loss=2.015, end_loss=1.9),
        ],
    )
    assert build_run(paths).sessions[1].flags == ()


@pytest.mark.parametrize(
    ("losses", "direction"),
    [
        ([3.0, 2.8, 2.6, 2.4, 2.2, 2.0], "improving"),
        ([2.0, 2.1, 2.2], "worsening"),
        ([2.0, 2.005], "flat"),
        ([2.0], "unknown"),
    ],
)
def test_trend_compares_first_and_last_of_the_last_five_sessions(
    tmp_path: Path, losses: list[float], direction: str
) -> None:
    sessions = [session(h + 1, h * 100, h * 100 + 100, end_loss=v) for h, v in enumerate(losses)]
    trend = build_run(write_run(tmp_path, sessions)).summary["trend"]
    assert trend["direction"] == direction
    assert trend["points"] == min(5, len(losses))
    if direction != "unknown":
        window = losses[-5:]
        assert (trend["first_val_loss"], trend["last_val_loss"]) == (window[0], window[-1])
        assert trend["delta"] == pytest.approx(window[-1] - window[0])


def test_summary_document_matches_the_strict_schema_and_an_extra_field_is_refused(tmp_path: Path) -> None:
    doc = summary_document([build_run(three_session_run(tmp_path))])
    assert schema.problems(doc, "summary") == []  # jsonschema agrees with the fast checker
    bad = copy.deepcopy(doc)
    bad["runs"]["nanecho-cached-ci"]["surprise"] = 1
    assert not fastschema.is_valid(bad, "summary")
    with pytest.raises(NanechoError, match=r"summary schema"):
        schema.validate(bad, "summary", "training_summary.json")


def test_regenerate_is_byte_identical_for_the_same_inputs_whatever_the_line_order(tmp_path: Path) -> None:
    """sessions.jsonl is merged with merge=union: the two sides of a rebase may land in either order."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    three_session_run(a)
    three_session_run(b)
    lines = (b / CI / "sessions.jsonl").read_text().splitlines()
    (b / CI / "sessions.jsonl").write_text("\n".join([lines[2], lines[0], lines[1], lines[0]]) + "\n")
    written_a, written_b = regenerate(a), regenerate(b)
    assert [p.relative_to(a) for p in written_a] == [p.relative_to(b) for p in written_b]
    assert [p.relative_to(a).as_posix() for p in written_a] == [
        ".training-progress/nanecho-cached-ci/training_summary.json",
        ".training-progress/PROGRESS.md",
    ]
    for pa, pb in zip(written_a, written_b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    first = [p.read_bytes() for p in written_a]
    regenerate(a)
    assert [p.read_bytes() for p in written_a] == first
    assert (
        json.loads(first[0])["runs"]["nanecho-cached-ci"]["sessions"] == 3
    )  # the repeated line counted once


def test_regenerate_for_one_run_still_lists_every_run_in_progress_md(tmp_path: Path) -> None:
    ci = three_session_run(tmp_path)
    write_run(
        tmp_path,
        [session(1, 0, 50, source="fresh", run="nanecho-cached-full", preset="full")],
        run=".training-progress/nanecho-cached-full",
    )
    written = regenerate(tmp_path, [ci])
    assert written == [ci.summary, tmp_path / ".training-progress" / "PROGRESS.md"]
    assert not (tmp_path / ".training-progress/nanecho-cached-full/training_summary.json").exists()
    progress = written[1].read_text()
    assert "## nanecho-cached-ci" in progress and "## nanecho-cached-full" in progress


def test_regenerate_without_runs_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NanechoError, match="no runs found"):
        regenerate(tmp_path)


def test_a_malformed_sessions_line_fails_before_anything_is_written(tmp_path: Path) -> None:
    paths = three_session_run(tmp_path)
    lines = paths.sessions.read_text().splitlines()
    record = json.loads(lines[1])
    record["end_iteration"] = -5
    paths.sessions.write_text("\n".join([lines[0], dumps_line(record), lines[2]]) + "\n")
    with pytest.raises(NanechoError, match=r"sessions.jsonl:2.*end_iteration"):
        regenerate(tmp_path)
    assert not paths.summary.exists()
    assert not (tmp_path / ".training-progress/PROGRESS.md").exists()


def test_stable_sample_keeps_its_picks_when_items_are_appended() -> None:
    """A committed sample must not reshuffle every session: that is git growth for nothing."""
    assert stable_sample(list(range(10)), 32) == list(range(10))
    strides_seen = set()
    for n in range(33, 600):
        before, after = stable_sample(list(range(n)), 32), stable_sample(list(range(n + 1)), 32)
        assert len(after) <= 32 and after[0] == 0 and after[-1] == n
        stride = after[1] - after[0]
        strides_seen.add(stride)
        if before[1] - before[0] == stride:  # same grid: earlier picks stay, at most one grid point joins
            grid_before = [p for p in before if p % stride == 0]
            grid_after = [p for p in after if p % stride == 0]
            assert grid_after[: len(grid_before)] == grid_before
            assert len(grid_after) - len(grid_before) <= 1
    assert strides_seen == {2, 4, 8, 16, 32}


def test_downsample_is_bounded_and_keeps_first_and_last() -> None:
    assert downsample(list(range(10)), 20) == list(range(10))
    picked = downsample(list(range(1000)), 32)
    assert len(picked) == 32 and picked[0] == 0 and picked[-1] == 999
    assert picked == sorted(set(picked))


def test_outputs_stay_bounded_as_sessions_grow(tmp_path: Path) -> None:
    def build(root: Path, count: int) -> dict[str, int]:
        sessions = [
            session(0, 0, 100, source="fresh", start_loss=None, end_loss=3.0),
            *[
                {
                    **session(
                        0, i * 100, i * 100 + 100, start_loss=3.0 - (i - 1) * 0.001, end_loss=3.0 - i * 0.001
                    ),
                    "session_id": f"20261124T000000Z-{i:06x}",
                    "started_at": f"2026-11-{24 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
                    "ended_at": f"2026-11-{24 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:30Z",
                }
                for i in range(1, count)
            ],
        ]
        sessions[0]["ended_at"] = "2026-11-24T00:00:30Z"
        write_run(root, sessions)
        regenerate(root)
        doc = json.loads((root / CI / "training_summary.json").read_text())["runs"]["nanecho-cached-ci"]
        assert doc["sessions"] == count and doc["resets"] == doc["regressions"] == 0
        assert len(doc["curve"]) <= 32
        return {
            "json": (root / CI / "training_summary.json").stat().st_size,
            "md": (root / ".training-progress/PROGRESS.md").stat().st_size,
        }

    small, large = build(tmp_path / "s", 40), build(tmp_path / "l", 1500)
    assert large["json"] < small["json"] * 1.3
    assert large["md"] < small["md"] * 1.3


def test_session_tokens_survive_schema_valid_huge_integers() -> None:
    # Found by the summarize fuzzer: end_iteration 1e+308 is a valid JSON Schema integer, and
    # tokens_seen * trained overflowed to inf before the division (OverflowError in round()).
    from nanecho_core.summary import _session_tokens

    rec = {
        "start_iteration": 200,
        "end_iteration": 1e308,
        "tokens_seen": 192000,
        "tokens_per_s": 1.0,
        "wall_s": 1.0,
    }
    assert _session_tokens(rec) == 192000  # (1e308 - 200 is 1e308 in floats)
    assert _session_tokens({**rec, "tokens_seen": 0, "tokens_per_s": 1e308, "wall_s": 1e308}) == 0
    assert _session_tokens({**rec, "end_iteration": 400, "tokens_seen": 1000}) == 500

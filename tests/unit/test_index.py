"""Index operations: best/latest rules, the record fast path, concurrency, one-off fixes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from nanecho_core import index
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import dumps_canonical
from nanecho_core.store import empty_index, locked, read_sessions, run_paths
from tests.factories import make_entry, make_session

RUN = ".training-progress/nanecho-cached-ci"


def session_of(sid: str, *losses: float | None, start: int = 0, created_minute: int = 0) -> dict[str, Any]:
    entries = []
    for n, loss in enumerate(losses, start=1):
        it = start + n * 100
        entries.append(
            make_entry(
                sid,
                it,
                loss,
                created_at=f"2026-11-24T{created_minute // 60:02d}:{created_minute % 60:02d}:{n:02d}Z",
            )
        )
    return make_session(sid, start, start + len(losses) * 100, checkpoints=entries)


def record(root: Path, step: dict[str, Any]) -> index.RecordResult:
    paths = run_paths(root, RUN)
    with locked(paths):
        return index.record_session(paths, step)


def test_best_ignores_suspect_and_pruned_and_compares_only_the_latest_eval_set() -> None:
    doc = empty_index("r")
    old_eval = make_entry("s-a", 100, 0.5, eval_fingerprint="e" * 64, created_at="2026-11-24T00:00:00Z")
    pruned = make_entry("s-b", 200, 0.9, status="pruned", created_at="2026-11-24T00:01:00Z")
    suspect = make_entry("s-c", 300, 0.01, created_at="2026-11-24T00:02:00Z")
    suspect["tags"] = ["suspect:eval-is-train"]
    good = make_entry("s-d", 400, 1.5, created_at="2026-11-24T00:03:00Z")
    doc["checkpoints"] = [good, suspect, pruned, old_eval]
    index.recompute(doc)
    assert doc["best_id"] == good["id"] and doc["latest_id"] == good["id"]
    assert [e["id"] for e in doc["checkpoints"]] == [old_eval["id"], pruned["id"], suspect["id"], good["id"]]


def test_equal_losses_prefer_the_later_checkpoint() -> None:
    doc = empty_index("r")
    doc["checkpoints"] = [make_entry("s-a", 100, 1.5), make_entry("s-a", 200, 1.5)]
    index.recompute(doc)
    assert doc["best_id"] == doc["checkpoints"][1]["id"]


def test_fractional_seconds_sort_after_whole_seconds() -> None:
    assert index.time_key("2026-11-24T00:00:29Z") < index.time_key("2026-11-24T00:00:29.3Z")
    assert index.time_key("2026-11-24T00:00:29.9Z") < index.time_key("2026-11-24T00:00:30Z")


def test_fast_path_is_byte_identical_to_the_slow_path(tmp_path: Path) -> None:
    steps = [
        session_of("20261124T000000Z-aaaaaa", 2.0, 1.8, created_minute=0),
        session_of("20261124T010000Z-bbbbbb", 1.6, 1.9, start=200, created_minute=60),
        session_of("20261124T020000Z-cccccc", None, 1.7, start=400, created_minute=120),
    ]
    fast_root, slow_root = tmp_path / "fast", tmp_path / "slow"
    fast_root.mkdir(), slow_root.mkdir()
    results = [record(fast_root, s) for s in steps]
    assert [r.fast_path for r in results] == [False, True, True]
    for step in steps:
        record(slow_root, step)
        (slow_root / RUN / ".metadata.verified").unlink()  # force the slow path every time
    fast_bytes = (fast_root / RUN / "cache/metadata.json").read_bytes()
    assert fast_bytes == (slow_root / RUN / "cache/metadata.json").read_bytes()
    doc = json.loads(fast_bytes)
    assert dumps_canonical(index.recompute(json.loads(fast_bytes))).encode() == fast_bytes
    assert doc["best_id"] == steps[1]["checkpoints"][0]["id"]
    assert doc["latest_id"] == steps[2]["checkpoints"][1]["id"]
    assert results[2].best_file == steps[1]["checkpoints"][0]["file"]


def test_out_of_order_or_new_eval_set_falls_back_to_the_slow_path(tmp_path: Path) -> None:
    record(tmp_path, session_of("20261124T010000Z-bbbbbb", 2.0, created_minute=60))
    earlier = record(tmp_path, session_of("20261124T000000Z-aaaaaa", 1.9, created_minute=0))
    assert earlier.fast_path is False
    step = session_of("20261124T020000Z-cccccc", 2.5, created_minute=120)
    step["checkpoints"][0]["eval_fingerprint"] = "f" * 64
    new_eval = record(tmp_path, step)
    assert new_eval.fast_path is False and new_eval.best_id == step["checkpoints"][0]["id"]
    doc = json.loads((tmp_path / RUN / "cache/metadata.json").read_text())
    assert [e["created_at"] for e in doc["checkpoints"]] == sorted(
        e["created_at"] for e in doc["checkpoints"]
    )


def test_hand_edited_metadata_is_revalidated_not_trusted(tmp_path: Path) -> None:
    record(tmp_path, session_of("20261124T000000Z-aaaaaa", 2.0))
    meta = tmp_path / RUN / "cache/metadata.json"
    meta.write_text(meta.read_text().replace('"status": "ok"', '"status": "gone"'))
    with pytest.raises(NanechoError, match=r"\$\.checkpoints\[0\]\.status"):
        record(tmp_path, session_of("20261124T010000Z-bbbbbb", 1.9, created_minute=60))


def test_crash_between_index_and_session_log_is_repaired_by_rerunning(tmp_path: Path) -> None:
    step = session_of("20261124T000000Z-aaaaaa", 2.0)
    record(tmp_path, step)
    (tmp_path / RUN / "sessions.jsonl").unlink()  # as if killed right after metadata.json was written
    again = record(tmp_path, step)
    assert again.added == [] and again.session_appended is True
    assert [s["session_id"] for s in read_sessions(run_paths(tmp_path, RUN))] == [step["session_id"]]


def _record_in_child(args: tuple[str, int]) -> None:
    root, n = args
    step = session_of(f"20261124T{n:02d}0000Z-{n:06x}", 2.0 - n / 100, created_minute=n)
    paths = run_paths(root, RUN)
    with locked(paths):
        index.record_session(paths, step)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_record_in_child, [(str(tmp_path), n) for n in range(12)])
    doc = json.loads((tmp_path / RUN / "cache/metadata.json").read_text())
    assert len(doc["checkpoints"]) == 12
    assert len(read_sessions(run_paths(tmp_path, RUN))) == 12
    assert doc["best_id"] == doc["checkpoints"][-1]["id"]


def test_set_field_refuses_unknown_fields_and_notes_the_change() -> None:
    doc = empty_index("r")
    doc["checkpoints"] = [make_entry()]
    cid = doc["checkpoints"][0]["id"]
    with pytest.raises(NanechoError, match="unknown or read-only field 'metrics.bogus'"):
        index.set_field(doc, cid, "metrics.bogus", 1)
    assert index.set_field(doc, cid, "status", "corrupt") == ("ok", "corrupt")
    assert doc["checkpoints"][0]["notes"] == ['meta-update set status: "ok" -> "corrupt"']
    assert index.parse_value("2.5") == 2.5 and index.parse_value("null") is None
    assert index.parse_value("plain text") == "plain text"


def test_a_valid_but_non_canonical_index_is_rewritten_by_the_slow_path(tmp_path: Path) -> None:
    record(tmp_path, session_of("20261124T000000Z-aaaaaa", 2.0))
    meta = tmp_path / RUN / "cache/metadata.json"
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps(doc))  # valid, one line: as a hand edit or another tool might leave it
    result = record(tmp_path, session_of("20261124T010000Z-bbbbbb", 1.9, created_minute=60))
    assert result.fast_path is False
    assert meta.read_text() == dumps_canonical(index.recompute(json.loads(meta.read_text())))


def test_first_reader_of_a_fresh_checkout_stamps_the_validated_bytes(tmp_path: Path) -> None:
    from nanecho_core.store import is_verified, load_metadata

    record(tmp_path, session_of("20261124T000000Z-aaaaaa", 2.0))
    paths = run_paths(tmp_path, RUN)
    paths.verified.unlink()  # a fresh clone: the stamp is never committed
    load_metadata(paths)
    assert is_verified(paths, paths.metadata.read_bytes())
    assert record(tmp_path, session_of("20261124T010000Z-bbbbbb", 1.9, created_minute=60)).fast_path is True


def test_a_verdict_stamped_by_another_checker_version_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stricter check (e.g. ECMA `$`) must re-validate an index an older checker stamped valid.
    from nanecho_core import fastschema
    from nanecho_core.store import is_verified, load_metadata

    record(tmp_path, session_of("20261124T000000Z-aaaaaa", 2.0))
    paths = run_paths(tmp_path, RUN)
    assert is_verified(paths, paths.metadata.read_bytes())
    monkeypatch.setattr(fastschema, "CHECKER_VERSION", fastschema.CHECKER_VERSION + 1)
    fastschema.schema_digest.cache_clear()
    try:
        assert not is_verified(paths, paths.metadata.read_bytes())
        load_metadata(paths)  # validates afresh and stamps with the new version
        assert is_verified(paths, paths.metadata.read_bytes())
    finally:
        monkeypatch.undo()
        fastschema.schema_digest.cache_clear()


def test_first_record_without_checkpoints_creates_an_empty_index(tmp_path: Path) -> None:
    result = record(tmp_path, make_session("20261124T000000Z-aaaaaa", checkpoints=[]))
    assert result.added == [] and result.session_appended is True
    doc = json.loads((tmp_path / RUN / "cache/metadata.json").read_text())
    assert doc["checkpoints"] == [] and doc["best_id"] is None

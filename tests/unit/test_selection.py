"""ckpt-select's core: best verified checkpoint, every rejection explained, the regression guard."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from nanecho_core import index
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import atomic_write_bytes, atomic_write_json
from nanecho_core.presets import preset_model_fingerprint
from nanecho_core.selection import select_checkpoint
from nanecho_core.store import RunPaths, empty_index, run_paths, save_metadata
from tests.factories import CI_MODEL, make_entry, write_fake_checkpoint

RUN = ".training-progress/nanecho-cached-ci"
CI_FP = preset_model_fingerprint("ci")


def seed_run(root: Path, entries: list[dict[str, Any]], *, files: bool = True) -> RunPaths:
    """An index holding `entries` (and their fake weights + sidecars when `files`)."""
    paths = run_paths(root, RUN)
    doc = empty_index(paths.name)
    doc["checkpoints"] = [dict(e) for e in entries]
    index.recompute(doc)
    save_metadata(paths, doc)
    if files:
        for entry in entries:
            if entry["status"] == "ok":
                write_fake_checkpoint(paths.dir, entry)
    return paths


def select(paths: RunPaths, **kwargs: Any) -> dict[str, Any]:
    return select_checkpoint(paths, model_fingerprint=CI_FP, **kwargs)


def reasons(doc: dict[str, Any]) -> dict[str, str]:
    return {f"{r['tier']}:{r['id']}": r["reason"] for r in doc["rejected"]}


def chain(*losses: float | None, session: str = "20261124T000000Z-aaaaaa") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for n, loss in enumerate(losses, start=1):
        parent = entries[-1]["id"] if entries else None
        entries.append(make_entry(session, n * 100, loss, parent_id=parent))
    return entries


def test_best_is_lowest_val_loss_not_the_latest_iteration(tmp_path: Path) -> None:
    # The legacy "quality score" grew with the iteration number, so the latest always won, even a
    # worse restart. Here a later, worse lineage (a fresh start) exists: the best one is resumed.
    a, b = chain(2.0, 1.5)
    (restart,) = chain(1.9, session="20261124T010000Z-bbbbbb")
    restart["created_at"] = "2026-11-24T01:00:00Z"
    doc = select(seed_run(tmp_path, [a, b, restart]))
    assert doc["source"] == "cache"
    assert doc["chosen"]["id"] == b["id"]
    assert doc["resume_path"] == str(tmp_path / RUN / b["file"])
    assert doc["regression"] is False
    assert doc["reason"] == "best verified val_loss 1.5 at iteration 200 (cache tier, from index)"
    assert reasons(doc) == {
        f"cache:{restart['id']}": f"not needed: ranked below {b['id']}",
        f"cache:{a['id']}": f"not needed: ranked below {b['id']}",
    }


def test_the_best_lineage_is_continued_from_its_newest_checkpoint_not_replayed(tmp_path: Path) -> None:
    # Once val loss stops improving, resuming the best checkpoint itself would replay the same
    # iterations in every session (resume is exact): the session continues from the lineage's head.
    a, b, c, d = chain(2.0, 1.5, 1.52, 1.55)
    (restart,) = chain(1.9, session="20261124T010000Z-bbbbbb")
    restart["created_at"] = "2026-11-24T01:00:00Z"
    doc = select(seed_run(tmp_path, [a, b, c, d, restart]))
    assert doc["chosen"]["id"] == d["id"]
    assert doc["resume_path"] == str(tmp_path / RUN / d["file"])
    assert doc["regression"] is False
    assert doc["reason"] == (
        "best verified val_loss 1.5 at iteration 200 (cache tier, from index); resuming its newest "
        "verified descendant at iteration 400 (cache tier, from index) so training continues instead "
        "of replaying"
    )
    assert reasons(doc) == {
        f"cache:{b['id']}": f"not needed: best, continued by its descendant {d['id']}",
        f"cache:{c['id']}": f"not needed: ranked below {b['id']}",
        f"cache:{restart['id']}": f"not needed: ranked below {b['id']}",
        f"cache:{a['id']}": f"not needed: ranked below {b['id']}",
    }


def test_a_long_plateau_is_not_a_regression(tmp_path: Path) -> None:
    # Best at iteration 100, the lineage trained on to 2,600 without beating it: nothing is lost,
    # so the "much later" guard must not fire (it refused this healthy index before).
    entries = chain(1.5, *[1.6] * 25)
    doc = select(seed_run(tmp_path, entries))
    assert doc["chosen"]["id"] == entries[-1]["id"] and doc["chosen"]["iteration"] == 2600
    assert doc["regression"] is False


def test_a_corrupt_head_falls_back_to_the_next_newest_descendant_then_to_the_best(tmp_path: Path) -> None:
    a, b, c, d = chain(2.0, 1.5, 1.52, 1.55)
    paths = seed_run(tmp_path, [a, b, c, d])
    (paths.dir / d["file"]).write_bytes(b"torn")
    doc = select(paths)
    assert doc["chosen"]["id"] == c["id"]
    assert reasons(doc)[f"cache:{d['id']}"].startswith("size 4 != recorded")
    (paths.dir / c["file"]).unlink()
    doc = select(paths)
    assert doc["chosen"]["id"] == b["id"]
    assert reasons(doc)[f"cache:{c['id']}"] == f"file not found: {paths.dir / c['file']}"


@pytest.mark.parametrize(
    "change",
    [
        {"eval_fingerprint": "e" * 64},  # --init-from with other eval settings: not comparable
        {"data_fingerprint": "d" * 64},  # trained on other data: resume would be refused
        {"tags": ["suspect-manual"]},  # flagged by hand
    ],
)
def test_a_descendant_that_is_not_the_same_lineage_is_not_continued(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    a, b, c = chain(2.0, 1.5, 1.6)
    c.update(change, created_at="2026-11-24T00:01:30Z")  # before b: b's eval set stays the newest
    doc = select(seed_run(tmp_path, [a, b, c]), allow_fresh=True)
    assert doc["chosen"]["id"] == b["id"]
    assert doc["reason"] == "best verified val_loss 1.5 at iteration 200 (cache tier, from index)"


def test_an_init_from_restart_of_the_best_is_never_its_continuation(tmp_path: Path) -> None:
    # --init-from links its first checkpoint to the source but restarts the count at 0: however
    # far the restart has got, the lineage of the best continues from its own head.
    a, b, head = chain(2.0, 1.5, 1.55)
    restart = chain(1.9, 1.8, 1.7, 1.65, session="20261124T010000Z-bbbbbb")
    restart[0]["parent_id"] = b["id"]
    for e in restart:
        e["created_at"] = "2026-11-24T01:00:00Z"
    doc = select(seed_run(tmp_path, [a, b, head, *restart]), allow_fresh=True)
    assert doc["chosen"]["id"] == head["id"]


def test_the_head_is_the_most_trained_descendant_not_the_newest_created(tmp_path: Path) -> None:
    # Indexes from before lineage heads hold branches that all restarted at the best: the branch
    # that got furthest is continued, whichever was written last.
    a, best = chain(2.0, 1.5)
    far: list[dict[str, Any]] = []
    for iteration in (300, 400, 500):
        parent = far[-1]["id"] if far else best["id"]
        far.append(make_entry("20261124T010000Z-bbbbbb", iteration, 1.6, parent_id=parent))
    near = make_entry("20261124T020000Z-cccccc", 300, 1.6, parent_id=best["id"])
    near["created_at"] = "2026-11-24T02:00:00Z"
    doc = select(seed_run(tmp_path, [a, best, *far, near]))
    assert doc["chosen"]["id"] == far[-1]["id"] and doc["regression"] is False


def test_an_unmeasured_head_is_chosen_once_and_never_also_rejected(tmp_path: Path) -> None:
    # A forced save (second signal) has no val loss: it cannot be ranked, but it is the lineage head.
    a, b, forced = chain(2.0, 1.5, None)
    paths = seed_run(tmp_path, [a, b, forced])
    doc = select(paths)
    assert doc["chosen"]["id"] == forced["id"]
    assert reasons(doc) == {
        f"cache:{b['id']}": f"not needed: best, continued by its descendant {forced['id']}",
        f"cache:{a['id']}": f"not needed: ranked below {b['id']}",
    }
    (paths.dir / forced["file"]).write_bytes(b"torn")
    doc = select(paths)
    assert doc["chosen"]["id"] == b["id"]
    assert [r["reason"] for r in doc["rejected"] if r["id"] == forced["id"]] == [
        f"size 4 != recorded {forced['bytes']} bytes (truncated or replaced)"
    ]


def test_metric_and_mode_choose_a_different_best(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    (c,) = chain(1.0, session="20261124T010000Z-bbbbbb")
    c["created_at"] = a["created_at"]  # an older lineage: the newest eval set stays a's
    a["metrics"]["accuracy"], b["metrics"]["accuracy"], c["metrics"]["accuracy"] = 0.9, 0.4, 0.5
    doc = select(seed_run(tmp_path, [a, b, c]), metric="accuracy", mode="max", allow_fresh=True)
    assert doc["chosen"]["id"] == b["id"]  # a is best by accuracy; b continues a's lineage
    assert reasons(doc)[f"cache:{c['id']}"] == f"not needed: ranked below {a['id']}"
    doc = select(seed_run(tmp_path, [a, b, c]), metric="val_loss", mode="min", allow_fresh=True)
    assert doc["chosen"]["id"] == c["id"]  # by val loss c's lineage is best


def test_corrupt_best_is_rejected_and_the_next_verified_one_chosen(tmp_path: Path) -> None:
    a, b, c = chain(2.0, 1.50, 1.52)
    paths = seed_run(tmp_path, [a, b, c])
    (paths.dir / b["file"]).write_bytes(b"weights of something else")
    doc = select(paths)
    assert doc["chosen"]["id"] == c["id"]
    assert (
        reasons(doc)[f"cache:{b['id']}"] == f"size 25 != recorded {b['bytes']} bytes (truncated or replaced)"
    )
    same_size = b"x" * b["bytes"]
    (paths.dir / b["file"]).write_bytes(same_size)
    doc = select(paths)
    digest = hashlib.sha256(same_size).hexdigest()
    assert reasons(doc)[f"cache:{b['id']}"] == (
        f"sha256 mismatch: file {digest[:12]} != recorded {b['sha256'][:12]} (corrupt)"
    )


def test_only_the_chosen_candidate_is_hashed(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    paths = seed_run(tmp_path, [a, b])
    (paths.dir / a["file"]).write_bytes(b"y" * a["bytes"])  # corrupt, but ranked below the best
    doc = select(paths)
    assert doc["chosen"]["id"] == b["id"]
    assert reasons(doc) == {f"cache:{a['id']}": f"not needed: ranked below {b['id']}"}


def test_missing_file_is_rejected_with_its_path(tmp_path: Path) -> None:
    a, b = chain(1.51, 1.5)
    paths = seed_run(tmp_path, [a, b])
    (paths.dir / b["file"]).unlink()
    doc = select(paths)
    assert doc["chosen"]["id"] == a["id"]
    assert reasons(doc)[f"cache:{b['id']}"] == f"file not found: {paths.dir / b['file']}"


def test_other_architecture_and_non_ok_status_and_suspect_entries_are_rejected(tmp_path: Path) -> None:
    ok = make_entry(iteration=100, val_loss=2.0)
    wide = make_entry("20261124T000000Z-bbbbbb", 200, 1.0, model={**CI_MODEL, "n_embd": 256})
    pruned = make_entry("20261124T000000Z-cccccc", 300, 1.9, status="pruned")
    suspect = make_entry("20261124T000000Z-dddddd", 400, 0.001)
    suspect["tags"] = ["suspect:eval-equals-train"]
    doc = select(seed_run(tmp_path, [ok, wide, pruned, suspect]), allow_fresh=True)
    assert doc["chosen"]["id"] == ok["id"]
    found = reasons(doc)
    assert found[f"cache:{wide['id']}"].endswith("(architecture differs)")
    assert found[f"index:{pruned['id']}"] == "status pruned"
    assert found[f"cache:{suspect['id']}"] == "flagged suspect:eval-equals-train"


def test_losses_on_an_older_eval_set_are_not_compared(tmp_path: Path) -> None:
    old_eval = make_entry(iteration=100, val_loss=0.5, eval_fingerprint="e" * 64)
    new_eval = make_entry(iteration=200, val_loss=1.9)
    doc = select(seed_run(tmp_path, [old_eval, new_eval]))
    assert doc["chosen"]["id"] == new_eval["id"]
    assert doc["eval_fingerprint"] == new_eval["eval_fingerprint"]
    assert reasons(doc)[f"cache:{old_eval['id']}"] == (
        f"eval set eeeeeeeeeeee differs from the newest eval set {new_eval['eval_fingerprint'][:12]}: not comparable"
    )
    assert doc["regression"] is False


def test_unindexed_sidecar_is_a_candidate(tmp_path: Path) -> None:
    # A kill between the checkpoint save and `meta-update record` leaves weights + sidecar only.
    (a,) = chain(2.0)
    paths = seed_run(tmp_path, [a])
    orphan = make_entry("20261124T000000Z-bbbbbb", 200, 1.8, parent_id=a["id"])
    write_fake_checkpoint(paths.dir, orphan)
    doc = select(paths)
    assert doc["chosen"]["id"] == orphan["id"]
    assert doc["reason"].endswith("(cache tier, from sidecar)")


def test_artifact_tier_is_used_when_the_cache_is_empty(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.5)
    paths = seed_run(tmp_path, [a, b], files=False)
    for entry in (a, b):
        paths.dir.joinpath(entry["file"]).parent.mkdir(parents=True, exist_ok=True)
    index_doc = paths.metadata.read_bytes()
    artifacts = tmp_path / "artifacts"
    atomic_write_bytes(artifacts / f"{b['id']}.pt", f"weights of {b['id']}".encode())
    atomic_write_json(artifacts / f"{b['id']}.json", b)
    doc = select(paths, artifact_dir=artifacts)
    assert doc["source"] == "artifact"
    assert doc["resume_path"] == str(artifacts / f"{b['id']}.pt")
    assert reasons(doc)[f"cache:{b['id']}"] == f"file not found: {paths.dir / b['file']}"
    assert paths.metadata.read_bytes() == index_doc


def test_fresh_start_on_an_empty_index_says_why(tmp_path: Path) -> None:
    paths = run_paths(tmp_path, RUN)
    doc = select(paths)
    assert doc["source"] == "fresh"
    assert doc["chosen"] is None and doc["resume_path"] is None
    assert doc["reason"] == "fresh start: index empty, no artifact directory given"
    doc = select(paths, artifact_dir=tmp_path / "nowhere")
    assert (
        doc["reason"] == f"fresh start: index empty, no artifact (directory {tmp_path / 'nowhere'} missing)"
    )


def test_losing_a_much_better_checkpoint_fails_unless_allowed(tmp_path: Path) -> None:
    a, b = chain(2.0, 1.2)
    paths = seed_run(tmp_path, [a, b])
    (paths.dir / b["file"]).unlink()
    with pytest.raises(NanechoError) as error:
        select(paths)
    assert str(error.value) == (
        f"Error: refusing to resume: the index knows {b['id']} (val_loss 1.2, iteration 200, status ok) "
        f"but the best available is {a['id']} (val_loss 2, iteration 100); "
        "restore the cache or artifact, or pass --allow-fresh"
    )
    doc = select(paths, allow_fresh=True)
    assert doc["regression"] is True and doc["allow_fresh"] is True
    assert doc["chosen"]["id"] == a["id"]


def test_silent_reset_from_42500_to_500_iterations_is_refused(tmp_path: Path) -> None:
    # The legacy summary reset progress 42,500 -> 500 after a cache miss without a word.
    far = make_entry(iteration=42500, val_loss=1.50, status="missing")
    near = make_entry("20261124T000000Z-bbbbbb", 500, 1.51)
    paths = seed_run(tmp_path, [far, near])
    with pytest.raises(NanechoError, match="42000 iterations would be lost"):
        select(paths)


def test_fresh_start_when_the_index_knows_checkpoints_needs_allow_fresh(tmp_path: Path) -> None:
    paths = seed_run(tmp_path, chain(2.0), files=False)
    with pytest.raises(NanechoError, match="but the best available is a fresh start"):
        select(paths)
    doc = select(paths, allow_fresh=True)
    assert doc["source"] == "fresh" and doc["regression"] is True
    assert doc["reason"] == "fresh start: no usable checkpoint in the index, no artifact directory given"


def test_file_field_escaping_the_run_dir_through_a_symlink_is_an_error(tmp_path: Path) -> None:
    (a,) = chain(2.0)
    paths = seed_run(tmp_path, [a], files=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    paths.checkpoints_dir.parent.mkdir(parents=True, exist_ok=True)
    paths.checkpoints_dir.symlink_to(outside, target_is_directory=True)
    with pytest.raises(NanechoError, match="resolves outside"):
        select(paths)


def test_selection_json_is_byte_identical_to_canonical_json(tmp_path: Path) -> None:
    from nanecho_core.fsio import dumps_canonical
    from nanecho_core.selection import selection_json

    entries = chain(2.0, 1.5, 1.52, None)
    entries[0]["id"] = entries[0]["id"]  # ids and reasons with quotes/unicode are escaped the same way
    paths = seed_run(tmp_path, entries)
    (paths.dir / entries[2]["file"]).unlink()
    doc = select(paths)
    doc["rejected"].append({"id": 'odd "id" é', "tier": "artifact", "reason": "tab\there\nnewline"})
    assert selection_json(doc) == dumps_canonical(doc)
    empty = select(run_paths(tmp_path / "other", RUN)) if (tmp_path / "other").mkdir() is None else None
    assert empty is not None and selection_json(empty) == dumps_canonical(empty)


def test_an_accepted_reset_is_not_refused_again_on_the_next_run(tmp_path: Path) -> None:
    from nanecho_core.store import locked
    from tests.factories import make_session

    old = chain(2.0, 1.5)
    paths = seed_run(tmp_path, old, files=False)  # the cache and the artifacts are gone
    assert select(paths, allow_fresh=True)["regression"] is True
    fresh = make_entry("20261125T000000Z-bbbbbb", 100, 3.0)
    write_fake_checkpoint(paths.dir, fresh)
    step = make_session("20261125T000000Z-bbbbbb", checkpoints=[fresh], end_val_loss=3.0)
    step["regression_allowed"] = True
    with locked(paths):
        index.record_session(paths, step)

    # The next ordinary run resumes the new line instead of being refused for the lost one.
    doc = select(paths)
    assert doc["source"] == "cache" and doc["chosen"]["id"] == fresh["id"] and doc["regression"] is False
    recorded = {e["id"]: e for e in index.load_metadata(paths)["checkpoints"]}
    for lost in old:
        assert index.ABANDONED_TAG in recorded[lost["id"]]["tags"]
        assert "accepted a reset" in recorded[lost["id"]]["notes"][-1]
    assert recorded[fresh["id"]]["tags"] == []
    assert index.load_metadata(paths)["best_id"] == fresh["id"]


def test_a_session_without_an_accepted_reset_abandons_nothing(tmp_path: Path) -> None:
    from nanecho_core.store import locked
    from tests.factories import make_session

    old = chain(2.0)
    paths = seed_run(tmp_path, old)
    newer = make_entry("20261125T000000Z-bbbbbb", 200, 1.9, parent_id=old[0]["id"])
    write_fake_checkpoint(paths.dir, newer)
    with locked(paths):
        index.record_session(paths, make_session("20261125T000000Z-bbbbbb", checkpoints=[newer]))
    assert all(e["tags"] == [] for e in index.load_metadata(paths)["checkpoints"])

"""Properties of the metadata merge: nothing recorded on either side is lost, and it is deterministic."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nanecho_core import fastschema
from nanecho_core.index import recompute
from nanecho_core.index_merge import merge_documents
from nanecho_core.store import empty_index
from tests.factories import make_entry

POOL = [
    make_entry(f"s-{n % 3}", 100 * (n + 1), 2.0 - n / 20, created_at=f"2026-11-24T00:{n:02d}:00Z")
    for n in range(12)
]


def doc_of(indices: set[int]) -> dict[str, Any]:
    return recompute(
        {**empty_index("nanecho-cached-ci"), "checkpoints": [copy.deepcopy(POOL[i]) for i in sorted(indices)]}
    )


@settings(max_examples=60, deadline=None)
@given(
    base=st.sets(st.integers(0, 11), max_size=6),
    ours_new=st.sets(st.integers(0, 11), max_size=6),
    theirs_new=st.sets(st.integers(0, 11), max_size=6),
)
def test_two_sides_that_only_record_lose_nothing_and_commute(
    base: set[int], ours_new: set[int], theirs_new: set[int]
) -> None:
    ours, theirs = doc_of(base | ours_new), doc_of(base | theirs_new)
    merged = merge_documents(doc_of(base), ours, theirs)
    assert {e["id"] for e in merged["checkpoints"]} == {POOL[i]["id"] for i in base | ours_new | theirs_new}
    assert merged == merge_documents(doc_of(base), theirs, ours)
    assert merged == recompute(copy.deepcopy(merged))
    assert fastschema.is_valid(merged, "metadata")


def test_without_a_common_ancestor_the_union_is_taken() -> None:
    merged = merge_documents(None, doc_of({0, 1}), doc_of({1, 2}))
    assert [e["id"] for e in merged["checkpoints"]] == [POOL[i]["id"] for i in (0, 1, 2)]
    assert merged["best_id"] == POOL[2]["id"]

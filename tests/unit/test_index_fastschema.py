"""The compiled validator must agree with jsonschema on every schema the project ships."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nanecho_core import fastschema, schema
from nanecho_core.store import empty_index
from tests.factories import make_entry, make_session


def _metadata() -> dict[str, Any]:
    doc = empty_index("nanecho-cached-ci")
    doc["checkpoints"] = [make_entry(), make_entry(iteration=200, parent_id=make_entry()["id"])]
    doc["best_id"] = doc["checkpoints"][1]["id"]
    doc["latest_id"] = doc["checkpoints"][1]["id"]
    return doc


MUTATIONS: list[tuple[str, Any]] = [
    ("schema_version", 1),
    ("schema_version", True),
    ("run", "../x"),
    ("best_id", "not-an-id"),
    ("quality", {"metric": "val_loss", "mode": "median"}),
    ("extra", 1),
    ("checkpoints.0.iteration", -1),
    ("checkpoints.0.iteration", 1.5),
    ("checkpoints.0.iteration", True),
    ("checkpoints.0.iteration", 3.0),
    ("checkpoints.0.file", "../escape.pt"),
    ("checkpoints.0.file", "/abs.pt"),
    ("checkpoints.0.file", "a\\b.pt"),
    ("checkpoints.0.file", "a\x00b.pt"),  # found by the fuzzer: crashed os.path.realpath
    ("checkpoints.0.file", "a\tb.pt"),
    ("checkpoints.0.file", ""),
    ("checkpoints.0.sha256", "ABC"),
    ("checkpoints.0.created_at", "2026-11-24T00:00:00"),
    ("checkpoints.0.created_at", "2026-02-30T00:00:00Z"),
    ("checkpoints.0.created_at", "2026-11-24T25:00:00Z"),
    ("checkpoints.0.created_at", "2026-11-24t00:00:00.123Z"),
    ("checkpoints.0.metrics.train_loss", 0.0),
    ("checkpoints.0.metrics.val_loss", None),
    ("checkpoints.0.metrics.val_loss", "1.0"),
    ("checkpoints.0.metrics.custom", "x"),
    ("checkpoints.0.metrics.custom", 3),
    ("checkpoints.0.model.dropout", 1),
    ("checkpoints.0.model.bias", 0),
    ("checkpoints.0.model.extra", 0),
    ("checkpoints.0.status", "gone"),
    ("checkpoints.0.tags", ["a", "a"]),
    ("checkpoints.0.tags", ["-bad"]),
    ("checkpoints.0.notes", ["x" * 2001]),
    ("checkpoints.0.storage.present_locally", None),
    ("checkpoints.1.parent_id", None),
    ("checkpoints", {}),
]


def _mutate(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return out


@pytest.mark.parametrize(("dotted", "value"), MUTATIONS)
def test_fast_checker_agrees_with_jsonschema_on_metadata_mutations(dotted: str, value: Any) -> None:
    doc = _mutate(_metadata(), dotted, value)
    assert fastschema.is_valid(doc, "metadata") == schema.validator("metadata").is_valid(doc)


def test_fast_checker_accepts_valid_documents_of_every_kind() -> None:
    assert fastschema.is_valid(_metadata(), "metadata")
    assert fastschema.is_valid(make_session(checkpoints=[make_entry()]), "session")
    assert fastschema.is_valid(make_entry(), "metadata", "checkpoint")


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("eval_points", [[1, 0.5]]),
        ("eval_points", [[1, 0.0, None]]),
        ("eval_points", [[1, 2.0, "x"]]),
        ("eval_points", [[1, 2.0, None, 4]]),
        ("trigger", "cron"),
        ("git_sha", "XYZ"),
        ("wall_s", -1),
        ("wall_s", 1e308),  # summing two of these gave inf in summarize (found by probing the fuzzer's class)
        ("wall_s", 1e9),
        ("tokens_per_s", 1e13),
    ],
)
def test_fast_checker_agrees_with_jsonschema_on_session_mutations(dotted: str, value: Any) -> None:
    doc = _mutate(make_session(), dotted, value)
    assert fastschema.is_valid(doc, "session") == schema.validator("session").is_valid(doc)
    if dotted in ("wall_s", "tokens_per_s") and value > 1e9:
        assert not fastschema.is_valid(doc, "session")


def test_every_shipped_schema_compiles() -> None:
    for name in schema.SCHEMA_NAMES:
        fastschema.checker(name)


def test_validate_reports_the_jsonschema_message_for_an_invalid_document() -> None:
    doc = _mutate(_metadata(), "checkpoints.0.status", "gone")
    with pytest.raises(Exception) as fast_error:
        fastschema.validate(doc, "metadata", "m.json")
    with pytest.raises(Exception) as slow_error:
        schema.validate(doc, "metadata", "m.json")
    assert str(fast_error.value) == str(slow_error.value)
    assert str(fast_error.value).startswith("Error: m.json:$.checkpoints[0].status: ")


@pytest.mark.parametrize(
    ("name", "dotted", "value"),
    [
        # Python's `$` also matches before a final newline; JSON Schema's (ECMA-262) does not.
        ("metadata", "best_id", make_entry()["id"] + "\n"),
        ("metadata", "checkpoints.0.id", make_entry()["id"] + "\n"),
        ("metadata", "checkpoints.0.sha256", "a" * 64 + "\n"),
        ("metadata", "checkpoints.0.tags", ["keep\n"]),
        ("metadata", "checkpoints.0.created_at", "2026-11-24T00:00:00Z\n"),
        ("metadata", "checkpoints.0.created_at", "2026-11-24T00:00:60Z"),  # leap second: datetime cannot
        ("session", "session_id", make_session()["session_id"] + "\n"),
        ("session", "started_at", "2026-11-24T00:00:00Z\n"),
        ("session", "git_sha", "abcdef0\n"),
    ],
)
def test_both_validators_refuse_a_trailing_newline_and_leap_seconds(
    name: str, dotted: str, value: Any
) -> None:
    base = _metadata() if name == "metadata" else make_session()
    doc = _mutate(base, dotted, value)
    assert not fastschema.is_valid(doc, name)
    assert not schema.validator(name).is_valid(doc)


def test_ecma_pattern_turns_only_dollar_anchors_into_end_of_string() -> None:
    assert fastschema.ecma_pattern("^[a-z]+$") == r"^[a-z]+\Z"
    assert fastschema.ecma_pattern(r"(^|/)\.\.(/|$)") == r"(^|/)\.\.(/|\Z)"
    assert fastschema.ecma_pattern(r"^a\$[$]$") == r"^a\$[$]\Z"


def test_a_lowercase_t_is_valid_and_summarize_reads_it() -> None:
    from nanecho_core.summary import parse_timestamp

    doc = _mutate(make_session(), "started_at", "2026-11-24t00:00:00.5Z")  # RFC 3339 allows "t"
    assert fastschema.is_valid(doc, "session") and schema.validator("session").is_valid(doc)
    assert parse_timestamp("2026-11-24t00:00:00.5Z").isoformat() == "2026-11-24T00:00:00.500000+00:00"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_both_validators_refuse_non_finite_numbers(value: float) -> None:
    # JSON files cannot hold them (fsio.parse_json refuses), but command-line values can: NaN
    # fails no `minimum`, so jsonschema accepted `--max-minutes nan` where fastschema did not.
    for name, make in (
        ("session", lambda v: _mutate(make_session(), "wall_s", v)),
        ("metadata", lambda v: _mutate(_metadata(), "checkpoints.0.metrics.val_loss", v)),
        ("config", lambda v: {"schema_version": 1, "train": {"max_minutes": v}}),
    ):
        assert fastschema.is_valid(make(2.5), name) and schema.validator(name).is_valid(make(2.5)), name
        assert not fastschema.is_valid(make(value), name), name
        assert not schema.validator(name).is_valid(make(value)), name


def test_pattern_digits_are_ascii_in_both_validators(repo_root: Any) -> None:
    # ECMA's \d is 0-9; Python's also matches other scripts' digits ("٢٠٢٦" passed as a year).
    import json

    doc = json.loads((repo_root / "tests/fixtures/metadata.json").read_text())
    assert fastschema.is_valid(doc, "legacy_metadata") and schema.validator("legacy_metadata").is_valid(doc)
    first = next(iter(doc))
    doc[first]["created_at"] = "٢٠٢٦-٠٥-٢٨T14:53:29"
    assert not fastschema.is_valid(doc, "legacy_metadata")
    assert not schema.validator("legacy_metadata").is_valid(doc)


def test_time_key_sorts_a_lowercase_t_like_an_uppercase_one() -> None:
    from nanecho_core.index import time_key

    stamps = ["2026-11-24t00:00:02Z", "2026-11-24T00:00:01Z", "2026-11-24T00:00:03Z"]
    assert sorted(stamps, key=time_key) == [stamps[1], stamps[0], stamps[2]]

"""Hypothesis strategies for hostile documents, and an independent validity oracle.

A hostile document is bytes written where a tool expects JSON: arbitrary JSON values, raw bytes, and —
most of the time — a valid document (built by tests/factories.py) mutated a few times: keys deleted or
added, values replaced by other JSON or by wrong types, path-like strings made hostile, numbers made
extreme, then sometimes damaged as text (truncated, a non-finite literal, invalid UTF-8, a BOM).

The oracle validates with `jsonschema` itself against the schema files, not through nanecho_core.schema,
so a disagreement between the tools' own checker and the schemas shows up as a failure.
"""

from __future__ import annotations

import copy
import json
import math
from functools import cache
from importlib import resources
from typing import Any

from hypothesis import strategies as st

HOSTILE_STRINGS = (
    "",
    "../../../etc/passwd",
    "/etc/passwd",
    "cache/checkpoints/../../../outside.pt",
    "..",
    "cache\\..\\..\\x.pt",
    "C:\\Windows\\x.pt",
    "~/.ssh/id_rsa",
    "a\x00b",
    "\u202e\u0000\ud7ff",
    "x" * 5000,
    "https://x-access-token:ghp_canaryCANARYcanary0123456789abcd@example.invalid/r.git",
    "ckpt-../../x-00000001",
    "2026-13-45T99:99:99Z",
    "NaN",
    "null",
)
EXTREME_NUMBERS = (0, -1, -0.0, 1e-320, 2**31, 2**63, 2**64 + 1, 10**30, 1e308, -1e308, 0.5, 3.14159)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        st.sampled_from(HOSTILE_STRINGS),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _wrong_type(value: Any) -> list[Any]:
    options: list[Any] = [None, True, 0, 1.5, "text", [], {}, [value], {"value": value}]
    return [o for o in options if type(o) is not type(value) or o != value]


@st.composite
def mutated(draw: st.DrawFn, valid: Any, max_mutations: int = 3) -> Any:
    """`valid`, changed in 1..max_mutations places."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_mutations))):
        path = draw(st.sampled_from(_paths(doc)))
        current = _get(doc, path)
        op = draw(st.sampled_from(("replace", "wrong_type", "hostile", "extreme", "delete", "add_key")))
        if op == "replace":
            new: Any = draw(json_values(6))
        elif op == "wrong_type":
            new = draw(st.sampled_from(_wrong_type(current)))
        elif op == "hostile":
            new = draw(st.sampled_from(HOSTILE_STRINGS))
        elif op == "extreme":
            new = draw(st.sampled_from(EXTREME_NUMBERS))
        elif op == "delete" and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
            continue
        elif op == "add_key" and isinstance(current, dict):
            current[draw(st.text(min_size=1, max_size=10))] = draw(json_values(4))
            continue
        else:
            new = draw(json_values(4))
        if not path:
            doc = new
        else:
            _get(doc, path[:-1])[path[-1]] = new
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")


@st.composite
def damaged_text(draw: st.DrawFn, data: bytes) -> bytes:
    """Text-level damage a JSON parser must catch (or, for 1e999, the validator)."""
    how = draw(st.sampled_from(("truncate", "nan", "huge", "bad_utf8", "bom", "trailing", "duplicate_key")))
    if how == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "nan":
        return data.replace(b"2.0", b"NaN", 1).replace(b": 1,", b": Infinity,", 1) or b"NaN"
    if how == "huge":  # parses to float('inf'): valid JSON syntax, not a finite number
        return data.replace(b"2.0", b"1e999", 1).replace(b": 100", b": 1e999", 1)
    if how == "bad_utf8":
        cut = draw(st.integers(0, len(data)))
        return data[:cut] + b"\xff\xfe\xc3" + data[cut:]
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "trailing":
        return data + b"\n{}"
    return data.replace(b"{", b'{"schema_version": 1, ', 1)


def hostile_bytes(valid: Any) -> st.SearchStrategy[bytes]:
    """Bytes for a file whose valid content is `valid` (mostly mutations of it)."""
    mutations = mutated(valid).map(encode)
    return st.one_of(
        mutations,
        mutations,
        mutations,
        mutated(valid).map(encode).flatmap(damaged_text),
        json_values().map(encode),
        st.binary(max_size=64),
    )


# ---------------------------------------------------------------------------------------------------
# Oracle


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    package = resources.files("nanecho_schemas")
    docs = {
        item.name: json.loads(item.read_text("utf-8"))
        for item in package.iterdir()
        if item.name.endswith(".schema.json")
    }
    registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs.values())
    return Draft202012Validator(
        docs[f"{name}.schema.json"], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def parse_strict(data: bytes) -> tuple[bool, Any]:
    """(parsed?, value): strict UTF-8 JSON without NaN/Infinity literals or a BOM."""
    try:
        text = data.decode("utf-8")

        def reject(name: str) -> Any:
            raise ValueError(name)

        return True, json.loads(text, parse_constant=reject)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


def oracle_valid(data: bytes, name: str) -> bool:
    """Whether `data` is a document of schema `name` whose numbers are all finite."""
    ok, doc = parse_strict(data)
    return ok and _finite(doc) and _validator(name).is_valid(doc)

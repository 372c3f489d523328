"""Load the shared JSON Schemas (Draft 2020-12) and validate documents at every file boundary."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from nanecho_core.errors import NanechoError, json_path_of
from nanecho_core.fastschema import ecma_pattern, is_date_time, is_json_number
from nanecho_core.fsio import read_json

SCHEMA_NAMES = ("metadata", "session", "selection", "commit_result", "summary", "config", "legacy_metadata")
BASE_URI = "https://nanecho.dev/schemas/"


@cache
def _raw_schemas() -> dict[str, dict[str, Any]]:
    package = resources.files("nanecho_schemas")
    return {name: json.loads((package / f"{name}.schema.json").read_text("utf-8")) for name in SCHEMA_NAMES}


@cache
def _registry() -> Registry:
    resources_ = [(s["$id"], Resource.from_contents(s)) for s in _raw_schemas().values()]
    return Registry().with_resources(resources_)


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """`pattern` with ECMA-262's `$` (end of string only), as fastschema checks it."""
    if validator.is_type(instance, "string") and not re.search(ecma_pattern(pattern), instance, re.ASCII):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_json_number(checker: Any, instance: Any) -> bool:
    return is_json_number(instance)


# Draft 2020-12 with the checks that must agree with fastschema: `pattern` in ECMA semantics, and
# `date-time` and `number` (finite) by the same functions (jsonschema's own accept what datetime
# cannot read and NaN, which fails no `minimum`).
_Validator = validators.extend(
    Draft202012Validator,
    {"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _is_json_number),
)
_FORMATS = FormatChecker(formats=())
_FORMATS.checkers.update(Draft202012Validator.FORMAT_CHECKER.checkers)
_FORMATS.checkers["date-time"] = (is_date_time, ())


@cache
def validator(name: str) -> Draft202012Validator:
    """The cached validator for schema `name` (e.g. "metadata"), with format checks on."""
    if name not in SCHEMA_NAMES:
        raise KeyError(name)
    return _Validator(_raw_schemas()[name], registry=_registry(), format_checker=_FORMATS)


def schema_document(name: str) -> dict[str, Any]:
    return _raw_schemas()[name]


def current_version(name: str) -> int:
    """The `schema_version` const a document of this schema must carry."""
    return int(_raw_schemas()[name]["properties"]["schema_version"]["const"])


def validate(doc: Any, name: str, path: str | os.PathLike[str] | None = None) -> Any:
    """Validate `doc` against schema `name`; raise NanechoError naming the file and JSON path."""
    errors = list(validator(name).iter_errors(doc))
    if errors:
        raise _as_error(best_match(errors), name, path)
    return doc


def problems(doc: Any, name: str) -> list[str]:
    """Every violation as `<json path>: <message>`, sorted by path (for `validate` reports)."""
    found = sorted(validator(name).iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{json_path_of(e.absolute_path)}: {_short(e)}" for e in found]


def load(path: str | os.PathLike[str], name: str) -> Any:
    """Read a JSON file and validate it against schema `name`."""
    return validate(read_json(path), name, path)


def _short(error: ValidationError) -> str:
    message = error.message
    if len(message) > 200:
        message = message[:197] + "..."
    return f"{message} (schema {error.schema_path and '/'.join(str(p) for p in error.schema_path)})"


def _as_error(error: ValidationError, name: str, path: str | os.PathLike[str] | None) -> NanechoError:
    return NanechoError(
        f"does not match the {name} schema: {_short(error)}",
        path if path is not None else "<document>",
        json_path_of(error.absolute_path),
    )

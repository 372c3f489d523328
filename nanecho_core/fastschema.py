"""A compiled, import-light validator for the project's own schemas (the subset of Draft 2020-12 they use).

Why: importing jsonschema with its format extras costs ~1.5 s (rfc3987_syntax builds a grammar at
import) and validating a 10,000-entry index with it takes ~8 s. Light tools must start fast, so
documents are checked here first; only when a document is *invalid* do we fall back to jsonschema
(nanecho_core.schema) for its precise message. The compiler refuses any keyword it does not
implement, so a schema change can never be silently skipped; tests assert agreement with jsonschema.
"""

# mypy: disable-error-code="misc"
# (closures bind their arguments as lambda defaults, which mypy cannot infer; each is one expression)
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "$comment", "default", "examples"}
_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))\Z", re.ASCII
)


@cache
def ecma_pattern(pattern: str) -> str:
    r"""A JSON Schema (ECMA-262) `pattern` as a Python regex with the same meaning.

    The one difference that matters here: ECMA's `$` matches only at the end of the string, while
    Python's also matches before a final newline, which let `"ckpt-…-00000001\n"` pass `^…$`.
    Each `$` anchor (outside a character class, not escaped) becomes `\Z`; callers compile with
    re.ASCII, as ECMA's `\d` is 0-9 only (Python's also matches other scripts' digits).
    """
    out, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = "\\Z"
        out.append(char)
    return "".join(out)


@cache
def _documents() -> dict[str, dict[str, Any]]:
    """Every schema in the schemas package, keyed by file name (`metadata.schema.json`)."""
    package = resources.files("nanecho_schemas")
    docs: dict[str, dict[str, Any]] = {}
    for item in package.iterdir():
        if item.name.endswith(".schema.json"):
            docs[item.name] = json.loads(item.read_text("utf-8"))
    return docs


# Bump when this module's checks change meaning for the same schema text (2: ECMA `$`, no leap
# seconds; 3: no NaN/infinity; 4: ASCII digits): cached "valid" verdicts of older code must not be trusted.
CHECKER_VERSION = 4


@cache
def schema_digest(name: str) -> str:
    """sha256 of a schema document and CHECKER_VERSION, to tie cached verdicts to both."""
    text = f"{CHECKER_VERSION}\n" + json.dumps(_documents()[f"{name}.schema.json"], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def is_json_number(value: Any) -> bool:
    """JSON numbers: no bools, and no NaN or infinity (JSON cannot hold them; only Python can)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": is_json_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers (True != 1), containers compare deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if is_json_number(a) and is_json_number(b):
        return bool(a == b)
    return type(a) is type(b) and a == b


def is_date_time(value: Any) -> bool:
    """RFC 3339 date-time, as both validators check it (jsonschema uses this function too).

    Leap seconds (`:60`) are refused: Python's datetime cannot represent them, so a document
    holding one could not be summarized.
    """
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    if hour > 23 or minute > 59 or second > 59:
        return False
    offset_ok = match.group(9) is None or (int(match.group(9)) <= 23 and int(match.group(10)) <= 59)
    return offset_ok


class _Compiler:
    def __init__(self) -> None:
        self._refs: dict[str, Check] = {}

    def ref(self, base: str, ref: str) -> Check:
        file_part, _, pointer = ref.partition("#")
        file_name = file_part or base
        key = f"{file_name}#{pointer}"
        if key not in self._refs:
            node: Any = _documents()[file_name]
            for token in [t for t in pointer.split("/") if t]:
                node = node[token.replace("~1", "/").replace("~0", "~")]
            slot: list[Check] = []
            self._refs[key] = lambda v: slot[0](v)  # placeholder allows recursive refs
            slot.append(self.compile(node, file_name))
        return self._refs[key]

    def compile(self, node: Any, base: str) -> Check:  # noqa: C901 - one branch per keyword
        if node is True:
            return lambda v: True
        if node is False:
            return lambda v: False
        checks: list[Check] = []
        for key, arg in node.items():
            if key in _ANNOTATIONS or key in ("then", "else"):
                continue
            if key == "type":
                names = [arg] if isinstance(arg, str) else list(arg)
                funcs = [_TYPES[n] for n in names]
                checks.append(funcs[0] if len(funcs) == 1 else _any(funcs))
            elif key == "const":
                checks.append(lambda v, c=arg: _json_equal(v, c))
            elif key == "enum":
                checks.append(lambda v, e=arg: any(_json_equal(v, c) for c in e))
            elif key == "pattern":
                search = re.compile(ecma_pattern(arg), re.ASCII).search
                checks.append(lambda v, s=search: not isinstance(v, str) or s(v) is not None)
            elif key == "format":
                if arg != "date-time":
                    raise ValueError(f"fastschema: unsupported format {arg!r}")
                checks.append(is_date_time)
            elif key in ("minLength", "maxLength"):
                lo = arg if key == "minLength" else 0
                hi = arg if key == "maxLength" else None
                checks.append(
                    lambda v, lo=lo, hi=hi: (
                        not isinstance(v, str) or (len(v) >= lo and (hi is None or len(v) <= hi))
                    )
                )
            elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                op: Callable[[Any, Any], bool] = {
                    "minimum": lambda v, a: v >= a,
                    "maximum": lambda v, a: v <= a,
                    "exclusiveMinimum": lambda v, a: v > a,
                    "exclusiveMaximum": lambda v, a: v < a,
                }[key]
                checks.append(lambda v, a=arg, op=op: not is_json_number(v) or op(v, a))
            elif key == "required":
                checks.append(lambda v, r=frozenset(arg): not isinstance(v, dict) or v.keys() >= r)
            elif key == "properties":
                props = tuple((name, self.compile(sub, base)) for name, sub in arg.items())
                checks.append(_properties(props))
            elif key == "additionalProperties":
                known = frozenset(node.get("properties", {}))
                if arg is False:
                    checks.append(lambda v, k=known: not isinstance(v, dict) or k.issuperset(v))
                else:
                    extra = self.compile(arg, base)
                    checks.append(_additional(known, extra))
            elif key == "items":
                item = self.compile(arg, base)
                skip = len(node.get("prefixItems", []))
                checks.append(_items(item, skip))
            elif key == "prefixItems":
                checks.append(_prefix(tuple(self.compile(sub, base) for sub in arg)))
            elif key in ("minItems", "maxItems"):
                lo = arg if key == "minItems" else 0
                hi = arg if key == "maxItems" else None
                checks.append(
                    lambda v, lo=lo, hi=hi: (
                        not isinstance(v, list) or (len(v) >= lo and (hi is None or len(v) <= hi))
                    )
                )
            elif key == "uniqueItems":
                if arg:
                    checks.append(_unique)
            elif key == "anyOf":
                funcs = [self.compile(sub, base) for sub in arg]
                checks.append(_any(funcs))
            elif key == "allOf":
                funcs = [self.compile(sub, base) for sub in arg]
                checks.append(lambda v, fs=funcs: all(f(v) for f in fs))
            elif key == "not":
                inner = self.compile(arg, base)
                checks.append(lambda v, f=inner: not f(v))
            elif key == "if":
                cond = self.compile(arg, base)
                then = self.compile(node.get("then", True), base)
                other = self.compile(node.get("else", True), base)
                checks.append(lambda v, c=cond, t=then, o=other: t(v) if c(v) else o(v))
            elif key == "propertyNames":
                key_check = self.compile(arg, base)
                checks.append(lambda v, f=key_check: not isinstance(v, dict) or all(f(k) for k in v))
            elif key == "$ref":
                checks.append(self.ref(base, arg))
            else:
                raise ValueError(f"fastschema: unsupported keyword {key!r} in {base}")
        if len(checks) == 1:
            return checks[0]
        return _all(tuple(checks))


def _unique(value: Any) -> bool:
    if not isinstance(value, list):
        return True
    for i, a in enumerate(value):
        for b in value[i + 1 :]:
            if _json_equal(a, b):
                return False
    return True


_COMPILER = _Compiler()  # shared: schemas referencing metadata.schema.json compile its $defs once


def checker(name: str, definition: str | None = None) -> Check:
    """A compiled `is_valid` for schema `name` (e.g. "metadata"), or one of its `$defs`."""
    file_name = f"{name}.schema.json"
    pointer = f"#/$defs/{definition}" if definition else "#"
    return _COMPILER.ref(file_name, pointer)


def is_valid(doc: Any, name: str, definition: str | None = None) -> bool:
    return checker(name, definition)(doc)


def validate(doc: Any, name: str, path: str | os.PathLike[str] | None = None) -> Any:
    """Like nanecho_core.schema.validate, fast when valid; the precise error comes from jsonschema."""
    if is_valid(doc, name):
        return doc
    from nanecho_core import schema  # the slow import, paid only on the error path

    schema.validate(doc, name, path)
    raise AssertionError(f"fastschema and jsonschema disagree on a {name} document")  # pragma: no cover


# Closures with plain loops: generator expressions inside all()/any() cost a frame resume per item.
def _all(checks: tuple[Check, ...]) -> Check:
    def run(v: Any) -> bool:
        for c in checks:  # noqa: SIM110 - a loop, not all(genexpr): ~2.5x faster here
            if not c(v):
                return False
        return True

    return run


def _any(checks: Any) -> Check:
    checks = tuple(checks)

    def run(v: Any) -> bool:
        for c in checks:  # noqa: SIM110
            if c(v):
                return True
        return False

    return run


def _properties(props: tuple[tuple[str, Check], ...]) -> Check:
    def run(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name, check in props:  # noqa: SIM110
            if name in v and not check(v[name]):
                return False
        return True

    return run


def _additional(known: frozenset[str], extra: Check) -> Check:
    def run(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name, value in v.items():  # noqa: SIM110
            if name not in known and not extra(value):
                return False
        return True

    return run


def _items(item: Check, skip: int) -> Check:
    def run(v: Any) -> bool:
        if not isinstance(v, list):
            return True
        for x in v[skip:] if skip else v:  # noqa: SIM110
            if not item(x):
                return False
        return True

    return run


def _prefix(funcs: tuple[Check, ...]) -> Check:
    def run(v: Any) -> bool:
        if not isinstance(v, list):
            return True
        for f, x in zip(funcs, v, strict=False):  # noqa: SIM110
            if not f(x):
                return False
        return True

    return run

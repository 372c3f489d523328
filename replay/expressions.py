"""GitHub Actions `${{ }}` expressions: the subset NanEcho's workflows use, evaluated like GitHub does.

Supported: literals (null, booleans, numbers, 'strings' with '' escapes), context access (`a.b`,
`a['b']`), `!`, `<`, `<=`, `>`, `>=`, `==`, `!=`, `&&`, `||`, parentheses, and the functions
success(), always(), failure(), cancelled(), format(), contains(), startsWith(), endsWith(), join(),
toJSON() and fromJSON(). Semantics follow the GitHub documentation: `&&`/`||` return an operand,
strings compare case-insensitively, mismatched types compare as numbers. Anything else (object
filters `.*`, hashFiles(), unknown contexts or functions) raises ExpressionError instead of guessing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ExpressionError(Exception):
    """An expression the replay cannot evaluate faithfully."""


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>0x[0-9a-fA-F]+|-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<string>'(?:[^']|'')*')
    | (?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,*])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.VERBOSE,
)

STATUS_FUNCTIONS = ("success", "always", "failure", "cancelled")


@dataclass
class Context:
    """What an expression can see: named contexts plus the job status for the status functions."""

    contexts: Mapping[str, Any]
    status: str = "success"  # success | failure | cancelled
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"unexpected character {text[pos:].strip()[:1]!r} in expression {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent: || < && < ==,!= < comparisons < ! < member access < primary."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in expression {self.text!r}")
        self.pos += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "op" and token[1] in values

    def parse(self) -> tuple:
        node = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in expression {self.text!r}")  # type: ignore[index]
        return node

    def or_(self) -> tuple:
        node = self.and_()
        while self.at("||"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> tuple:
        node = self.equality()
        while self.at("&&"):
            self.take()
            node = ("and", node, self.equality())
        return node

    def equality(self) -> tuple:
        node = self.comparison()
        while self.at("==", "!="):
            op = self.take()[1]
            node = ("cmp", op, node, self.comparison())
        return node

    def comparison(self) -> tuple:
        node = self.unary()
        while self.at("<", "<=", ">", ">="):
            op = self.take()[1]
            node = ("cmp", op, node, self.unary())
        return node

    def unary(self) -> tuple:
        if self.at("!"):
            self.take()
            return ("not", self.unary())
        return self.member()

    def member(self) -> tuple:
        node = self.primary()
        while self.at(".", "["):
            if self.take()[1] == ".":
                kind, name = self.take()
                if kind == "op" and name == "*":
                    raise ExpressionError(f"object filters (.*) are not supported: {self.text!r}")
                if kind != "ident":
                    raise ExpressionError(f"expected a property name after '.' in {self.text!r}")
                node = ("get", node, ("lit", name))
            else:
                if self.at("*"):
                    raise ExpressionError(f"object filters ([*]) are not supported: {self.text!r}")
                index = self.or_()
                self.take("]")
                node = ("get", node, index)
        return node

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "number":
            return ("lit", float(int(value, 16)) if value.startswith("0x") else float(value))
        if kind == "string":
            return ("lit", value[1:-1].replace("''", "'"))
        if kind == "op" and value == "(":
            node = self.or_()
            self.take(")")
            return node
        if kind == "ident":
            lowered = value.lower()
            if lowered in ("true", "false"):
                return ("lit", lowered == "true")
            if lowered == "null":
                return ("lit", None)
            if self.at("("):
                self.take()
                args: list[tuple] = []
                while not self.at(")"):
                    args.append(self.or_())
                    if not self.at(")"):
                        self.take(",")
                self.take(")")
                return ("call", lowered, args)
            return ("ctx", value)
        raise ExpressionError(f"unexpected {value!r} in expression {self.text!r}")


def to_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        try:
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return math.nan
    return math.nan


def truthy(value: Any) -> bool:
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return not (value == 0 or math.isnan(value))
    return True


def to_string(value: Any) -> str:
    """How a value is rendered when substituted into text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2)


def _compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        a: Any = left.casefold()
        b: Any = right.casefold()
    elif isinstance(left, dict | list) or isinstance(right, dict | list):
        same = left is right
        if op in ("==", "!="):
            return same if op == "==" else not same
        return False
    elif type(left) is type(right) and not isinstance(left, str):
        a, b = left, right
    else:
        a, b = to_number(left), to_number(right)
    if isinstance(a, float) and isinstance(b, float) and (math.isnan(a) or math.isnan(b)):
        return op == "!="
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


def _lookup(container: Any, key: Any) -> Any:
    if isinstance(container, Mapping):
        if not isinstance(key, str):
            key = to_string(key)
        for name, value in container.items():
            if str(name).casefold() == key.casefold():
                return value
        return None
    if isinstance(container, list) and not isinstance(key, str):
        index = to_number(key)
        if not math.isnan(index) and index.is_integer() and 0 <= index < len(container):
            return container[int(index)]
    return None


def _format(template: Any, *args: Any) -> str:
    text = to_string(template)
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("{{", i) or text.startswith("}}", i):
            out.append(text[i])
            i += 2
        elif text[i] == "{":
            end = text.find("}", i)
            if end < 0 or not text[i + 1 : end].isdigit():
                raise ExpressionError(f"format(): invalid placeholder in {text!r}")
            index = int(text[i + 1 : end])
            if index >= len(args):
                raise ExpressionError(f"format(): no argument {index} for {text!r}")
            out.append(to_string(args[index]))
            i = end + 1
        elif text[i] == "}":
            raise ExpressionError(f"format(): unbalanced '}}' in {text!r}")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _contains(search: Any, item: Any) -> bool:
    if isinstance(search, list):
        return any(_compare("==", element, item) for element in search)
    return to_string(item).casefold() in to_string(search).casefold()


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "format": _format,
    "contains": _contains,
    "startswith": lambda s, p: to_string(s).casefold().startswith(to_string(p).casefold()),
    "endswith": lambda s, p: to_string(s).casefold().endswith(to_string(p).casefold()),
    "join": lambda a, sep=",": (
        to_string(sep).join(to_string(x) for x in a) if isinstance(a, list) else to_string(a)
    ),
    "tojson": lambda v: json.dumps(v, indent=2),
    "fromjson": lambda v: json.loads(to_string(v)),
}


def _evaluate(node: tuple, ctx: Context) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "ctx":
        name = node[1].lower()
        for key, value in ctx.contexts.items():
            if key.lower() == name:
                return value
        raise ExpressionError(f"unknown context {node[1]!r} (the replay supports: {', '.join(ctx.contexts)})")
    if kind == "get":
        return _lookup(_evaluate(node[1], ctx), _evaluate(node[2], ctx))
    if kind == "not":
        return not truthy(_evaluate(node[1], ctx))
    if kind == "and":
        left = _evaluate(node[1], ctx)
        return _evaluate(node[2], ctx) if truthy(left) else left
    if kind == "or":
        left = _evaluate(node[1], ctx)
        return left if truthy(left) else _evaluate(node[2], ctx)
    if kind == "cmp":
        return _compare(node[1], _evaluate(node[2], ctx), _evaluate(node[3], ctx))
    if kind == "call":
        name, args = node[1], node[2]
        if name in STATUS_FUNCTIONS:
            if args:
                raise ExpressionError(f"{name}() takes no arguments")
            return {
                "success": ctx.status == "success",
                "always": True,
                "failure": ctx.status == "failure",
                "cancelled": ctx.status == "cancelled",
            }[name]
        function = ctx.functions.get(name) or _FUNCTIONS.get(name)
        if function is None:
            raise ExpressionError(f"function {name}() is not supported by the replay")
        try:
            return function(*(_evaluate(arg, ctx) for arg in args))
        except TypeError as exc:
            raise ExpressionError(f"{name}(): {exc}") from exc
    raise ExpressionError(f"cannot evaluate node {kind}")  # pragma: no cover


def evaluate(expression: str, ctx: Context) -> Any:
    """Evaluate one expression (without the surrounding `${{ }}`)."""
    return _evaluate(_Parser(expression).parse(), ctx)


def _find_close(text: str, start: int) -> int:
    """Index of the `}}` closing an expression that starts at `start`, skipping string literals."""
    i = start
    while i < len(text):
        if text[i] == "'":
            i += 1
            while i < len(text):
                if text[i] == "'" and text[i + 1 : i + 2] == "'":
                    i += 2
                elif text[i] == "'":
                    break
                else:
                    i += 1
        elif text.startswith("}}", i):
            return i
        i += 1
    raise ExpressionError(f"unterminated '${{{{' in {text!r}")


def substitute(text: str, ctx: Context) -> str:
    """Replace every `${{ expr }}` in text by its rendered value."""
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        end = _find_close(text, start + 3)
        out.append(text[pos:start])
        out.append(to_string(evaluate(text[start + 3 : end], ctx)))
        pos = end + 2


def substitute_value(value: Any, ctx: Context) -> Any:
    """substitute() for a YAML scalar; a lone `${{ expr }}` keeps its type (like GitHub's `with:`)."""
    if isinstance(value, str):
        stripped = value.strip()
        if (
            stripped.startswith("${{")
            and stripped.endswith("}}")
            and _find_close(stripped, 3) == len(stripped) - 2
        ):
            return evaluate(stripped[3:-2], ctx)
        return substitute(value, ctx)
    return value


def evaluate_condition(condition: Any, ctx: Context) -> bool:
    """An `if:`: `${{ }}` optional; without a status function it means `success() && (condition)`."""
    if condition is None:
        condition = "success()"
    if isinstance(condition, bool):
        return condition and ctx.status == "success"
    if isinstance(condition, int | float):
        return truthy(float(condition)) and ctx.status == "success"
    text = str(condition).strip()
    if text.startswith("${{") and text.endswith("}}") and _find_close(text, 3) == len(text) - 2:
        text = text[3:-2].strip()
    elif "${{" in text:
        # GitHub renders embedded expressions into a string, which is always truthy when non-empty.
        return truthy(substitute(text, ctx)) and ctx.status == "success"
    node = _Parser(text).parse()
    if not _uses_status_function(node):
        node = ("and", ("call", "success", []), node)
    return truthy(_evaluate(node, ctx))


def _uses_status_function(node: Any) -> bool:
    if isinstance(node, list):
        return any(_uses_status_function(item) for item in node)
    if not isinstance(node, tuple):
        return False
    if node[0] == "call" and node[1] in STATUS_FUNCTIONS:
        return True
    return any(_uses_status_function(part) for part in node[1:])

"""Every JSON example in the README and docs/ that names its schema validates against it."""

from __future__ import annotations

import json
import re

import pytest

from nanecho_core import schema
from tests.conftest import REPO_ROOT

EXAMPLE = re.compile(r"<!-- schema: (?P<name>[a-z_]+) -->\s*```json\n(?P<body>.*?)```", re.S)
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def examples() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        if doc.exists():
            for match in EXAMPLE.finditer(doc.read_text(encoding="utf-8")):
                found.append((doc.name, match["name"], match["body"]))
    return found


def test_readme_carries_schema_checked_examples() -> None:
    names = {name for doc, name, _ in examples() if doc == "README.md"}
    assert {"selection", "session", "metadata"} <= names


@pytest.mark.parametrize(("doc", "name", "body"), examples(), ids=lambda v: v if len(v) < 40 else "")
def test_example_validates(doc: str, name: str, body: str) -> None:
    schema.validate(json.loads(body), name, doc)

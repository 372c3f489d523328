"""docs/cli.md is generated from the tools' --help and must be current (run `just docs`)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO_ROOT

SUBCOMMANDS = [
    "record", "show", "list", "validate", "set", "tag", "note", "remove", "mark-missing", "prune",
    "rescore", "migrate", "compact", "import-legacy", "merge-driver", "install-merge-driver",
]  # fmt: skip


def test_cli_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/cli_reference.py", "--check"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "docs/cli.md is current"


def test_cli_reference_documents_every_meta_update_subcommand() -> None:
    """Each subcommand has its own section with its options (they were all missing once)."""
    text = (REPO_ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = re.findall(r"^### `meta-update ([a-z-]+)`$", text, flags=re.MULTILINE)
    assert sections == sorted(SUBCOMMANDS)
    assert "--metadata-only" in text.split("### `meta-update validate`")[1].split("###")[0]

"""docs/cli.md is generated from the tools' --help and must be current (run `just docs`)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_cli_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/cli_reference.py", "--check"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "docs/cli.md is current"

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One intra-op thread per test process (and the tools it starts). The suite runs two xdist workers
# on two cores; torch's OpenMP threads spin-wait, so 2 workers x 2 threads ran training 8x slower
# than 2 x 1 (measured: 457 vs 3,657 tokens/s). Results are identical; set it to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _isolated_github_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a real runner's GitHub variables (CI may run inside Actions)."""
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "NANECHO_", "RUNNER_")) or name in ("GH_TOKEN", "CI"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def tool_bin() -> Path:
    """Directory of the venv's console scripts (ckpt-select, train-step, …)."""
    return BIN

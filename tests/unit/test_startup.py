"""Light tools never import torch or numpy, not at start-up and not while doing their work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "numpy")

# Each light tool is imported and run on a real (empty or tiny) input in a fresh interpreter.
PROBE = """
import json, sys
from typer.testing import CliRunner
import importlib
app = importlib.import_module(sys.argv[1]).app
result = CliRunner().invoke(app, json.loads(sys.argv[2]))
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy'})
print(json.dumps({"exit": result.exit_code, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("nanecho_tools.ckpt_select", ["--run", "r", "--out", "{tmp}/selection.json"]),
        ("nanecho_tools.meta_update", ["list", "--run", "r"]),
        ("nanecho_tools.summarize", ["--root", ".", "--run", "r"]),
        ("nanecho_tools.progress_commit", ["--help"]),
        ("nanecho_tools.train_step", ["--help"]),
    ],
)
def test_light_tools_never_import_torch_or_numpy(tmp_path: Path, module: str, args: list[str]) -> None:
    (tmp_path / "r").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, json.dumps(argv)],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"{module} imported {report['heavy']}"

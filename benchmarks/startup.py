"""Light-tool start-up against the baseline `python -c "import typer, jsonschema"` (goal ≤ 1.5×).

    python benchmarks/startup.py [REPEATS]

Each command runs REPEATS times (default 7), alternating with the baseline so machine noise hits
both alike; prints the median wall time of each and its ratio to the baseline's median.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        (root / "r").mkdir()
        baseline = [sys.executable, "-c", "import typer, jsonschema"]
        commands = {
            "ckpt-select (fresh run)": [
                str(BIN / "ckpt-select"),
                "--run",
                "r",
                "--out",
                str(root / "s.json"),
            ],
            "meta-update list": [str(BIN / "meta-update"), "list", "--run", "r"],
            "summarize": [str(BIN / "summarize"), "--root", ".", "--run", "r"],
            "progress-commit --help": [str(BIN / "progress-commit"), "--help"],
            "train-step --help": [str(BIN / "train-step"), "--help"],
        }
        times: dict[str, list[float]] = {"baseline": [], **{name: [] for name in commands}}
        for _ in range(repeats):
            for name, cmd in commands.items():
                times["baseline"].append(wall(baseline, root))
                times[name].append(wall(cmd, root))
    base = statistics.median(times["baseline"])
    print(f"{'command':28} {'median s':>9} {'ratio':>6}")
    print(f"{'import typer, jsonschema':28} {base:9.3f} {1.0:6.2f}")
    for name in commands:
        median = statistics.median(times[name])
        print(f"{name:28} {median:9.3f} {median / base:6.2f}")


if __name__ == "__main__":
    main()

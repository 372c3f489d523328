"""Generate docs/cli.md from the tools' --help (cog-style); `--check` fails when it is stale.

python scripts/cli_reference.py          # rewrite docs/cli.md
python scripts/cli_reference.py --check  # exit 1 if docs/cli.md differs from the tools' help
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# Plain click help (no rich boxes): stable across rich versions and readable in any Markdown viewer.
os.environ["TYPER_USE_RICH"] = "0"

import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "cli.md"
TOOLS = ["ckpt-select", "train-step", "meta-update", "progress-commit", "summarize", "nanecho"]
MODULES = {
    "ckpt-select": "nanecho_tools.ckpt_select",
    "train-step": "nanecho_tools.train_step",
    "meta-update": "nanecho_tools.meta_update",
    "progress-commit": "nanecho_tools.progress_commit",
    "summarize": "nanecho_tools.summarize",
    "nanecho": "nanecho_tools.umbrella",
}
ENV = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1", "TYPER_USE_RICH": "0"}


def _help(app: typer.Typer, prog: str, args: list[str]) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], prog_name=prog, env=ENV)
    if result.exit_code != 0:
        raise SystemExit(f"{prog} {' '.join(args)} --help failed: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def _subcommands(app: typer.Typer) -> list[str]:
    # Duck-typed: typer 0.2x vendors click, so its groups are not the click package's Group.
    command = typer.main.get_command(app)
    return sorted(getattr(command, "commands", None) or {})


def render() -> str:
    os.environ.update(ENV)
    parts = [
        "# CLI reference",
        "",
        "Generated from each tool's `--help` by `python scripts/cli_reference.py` (`just docs`);",
        "CI fails when this page is stale (`just lint`). Exit codes: 0 success, 2 user error",
        "(one `Error: <file>[:<json path>]: <what>` line on stderr), 3 nothing to do, 1 internal bug.",
        "",
    ]
    for tool in TOOLS:
        app = importlib.import_module(MODULES[tool]).app
        parts += [f"## `{tool}`", "", "```text", _help(app, tool, []), "```", ""]
        if tool == "nanecho":
            continue
        for sub in _subcommands(app):
            parts += [f"### `{tool} {sub}`", "", "```text", _help(app, tool, [sub]), "```", ""]
    return "\n".join(parts).rstrip("\n") + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run `just docs` (python scripts/cli_reference.py)")
            return 1
        print(f"{TARGET.relative_to(ROOT)} is current")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

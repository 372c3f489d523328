"""Console-script entry points: each tool's module is imported here, inside a handler.

A Ctrl-C while Python imports typer and the tool (the first ~0.1 s) raised KeyboardInterrupt with a
traceback, before any of the tool's own handling existed; here it is "Aborted." and exit 130 like a
Ctrl-C at any later moment.
"""

from __future__ import annotations

import functools
import importlib
import sys


def _run(module: str) -> None:
    try:
        main = importlib.import_module(f"nanecho_tools.{module}").main
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    main()


# The console scripts (pyproject.toml), one per tool.
ckpt_select = functools.partial(_run, "ckpt_select")
train_step = functools.partial(_run, "train_step")
meta_update = functools.partial(_run, "meta_update")
progress_commit = functools.partial(_run, "progress_commit")
summarize = functools.partial(_run, "summarize")
nanecho = functools.partial(_run, "umbrella")

"""Console-script entry points: each tool's module is imported here, inside a handler.

A Ctrl-C while Python imports typer and the tool (the first ~0.1 s) raised KeyboardInterrupt with a
traceback, before any of the tool's own handling existed; here it is "Aborted." and exit 130 like a
Ctrl-C at any later moment.
"""

from __future__ import annotations

import importlib
import sys


def _run(module: str) -> None:
    try:
        main = importlib.import_module(f"nanecho_tools.{module}").main
    except KeyboardInterrupt:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    main()


def ckpt_select() -> None:
    _run("ckpt_select")


def train_step() -> None:
    _run("train_step")


def meta_update() -> None:
    _run("meta_update")


def progress_commit() -> None:
    _run("progress_commit")


def summarize() -> None:
    _run("summarize")


def nanecho() -> None:
    _run("umbrella")

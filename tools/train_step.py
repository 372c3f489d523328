"""train-step: train for a budget, resuming exactly where the selected checkpoint stopped."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from nanecho_tools._cli import App, JsonFlag, OutPath, RootDir, RunDir, echo_json, run

app = App(help="Train the model for one session and write step.json.")


@app.command()
def train_step(
    out: OutPath,
    run_dir: RunDir = Path(".training-progress/nanecho-cached-ci"),
    root: RootDir = Path("."),
    preset: Annotated[str, typer.Option(help="Preset: ci, scheduled or full.")] = "ci",
    config: Annotated[Path | None, typer.Option(help="JSON override of preset fields.")] = None,
    resume: Annotated[Path | None, typer.Option(help="selection.json from ckpt-select.")] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Start a new run from this checkpoint's weights only.")
    ] = None,
    iters: Annotated[int | None, typer.Option(help="Train N MORE iterations this session.")] = None,
    until_iter: Annotated[int | None, typer.Option(help="Train up to global iteration I.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Wall-time budget, minutes.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    corpus: Annotated[
        Path | None, typer.Option(help="Corpus file (default: bundled tinyshakespeare).")
    ] = None,
    eval_interval: Annotated[int | None, typer.Option(help="Evaluate every N global iterations.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Train one session; save on improvement and at the end; SIGTERM/SIGINT stop cleanly (exit 0).

    On CPU the step is hand-written on oneDNN where the model allows (no dropout, no bias);
    NANECHO_CPU_ENGINE=autograd|mm|onednn overrides (docs/training.md, "The CPU step").

    Example:

        train-step --run .training-progress/nanecho-cached-ci --preset ci \\
            --resume selection.json --max-minutes 5 --out step.json
    """
    started = time.monotonic()
    from nanecho_core.distributed import is_main_process
    from nanecho_core.github import write_outputs
    from nanecho_core.signals import StopRequest, TrainingAborted
    from nanecho_core.train_session import TrainRequest, github_outputs, run_train_step

    # Installed until the outputs are written: a SIGTERM after step.json but before the last line
    # killed the process (exit 143) although the session was done and recorded.
    with _log_to_stderr(), StopRequest() as stop:
        request = TrainRequest(
            root=root,
            run=run_dir,
            preset=preset,
            config_path=config,
            resume=resume,
            init_from=init_from,
            iters=iters,
            until_iter=until_iter,
            max_minutes=max_minutes,
            device=device,
            corpus=corpus,
            eval_interval=eval_interval,
            out=out,
        )
        try:
            record = run_train_step(request, started, stop)
            if not is_main_process():  # under torchrun, rank 0 alone reports
                return
            write_outputs(github_outputs(record))
            if json_output:
                echo_json(record)
            else:
                typer.echo(
                    f"{record['session_id']}: iterations {record['start_iteration']} -> "
                    f"{record['end_iteration']}, val_loss {record['start_val_loss']} -> "
                    f"{record['end_val_loss']}, stop {record['stop_reason']}, "
                    f"{len(record['checkpoints_written'])} checkpoint(s) -> {out}"
                )
        except TrainingAborted as exc:
            typer.echo(f"Aborted: {exc}; the previous checkpoint stays valid", err=True)
            raise typer.Exit(128 + exc.signum) from None


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at emit time, never to a stream captured at set-up."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Progress lines go to stderr for this invocation only; the logger is left as it was found."""
    logger = logging.getLogger("nanecho_core")
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main() -> None:
    from nanecho_core.distributed import world_from_env
    from nanecho_core.errors import NanechoError

    try:
        several = world_from_env().world_size > 1
    except NanechoError:
        several = False  # the command itself reports the bad environment, cleanly
    if not several:
        run(app)
        return
    # Under torchrun, leave without the interpreter's teardown once everything is written and the
    # process group destroyed: gloo's C++ threads can abort a finished rank there (SIGABRT,
    # "terminate called without an active exception", seen twice in loaded test runs), and
    # torchrun then fails the whole job although its work was done.
    try:
        run(app)
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()

"""ckpt-select: choose the verified checkpoint a training session resumes from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nanecho_tools._cli import App, JsonFlag, OutPath, RootDir, RunDir, echo_json, run

app = App(
    help="Choose the best verified checkpoint to resume from (cache tier, then artifact tier, then fresh)."
)


@app.command()
def select(
    run_dir: RunDir,
    out: OutPath = Path("selection.json"),
    root: RootDir = Path("."),
    preset: Annotated[str, typer.Option(help="Preset whose model architecture must match.")] = "ci",
    config: Annotated[Path | None, typer.Option(help="Config override JSON (model fields matter).")] = None,
    metric: Annotated[str, typer.Option(help="Metric that ranks checkpoints.")] = "val_loss",
    mode: Annotated[str, typer.Option(help="min or max.")] = "min",
    artifact_dir: Annotated[
        Path | None,
        typer.Option(help="Downloaded artifact: <id>.pt + <id>.json sidecars."),
    ] = None,
    allow_fresh: Annotated[
        bool, typer.Option(help="Accept a start that loses a much better or much later checkpoint.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Pick the checkpoint to resume from and write selection.json.

    Example:

        ckpt-select --run .training-progress/nanecho-cached-ci --artifact-dir artifacts/prev --out selection.json

    Exit 2 (nothing written) when the index knows a checkpoint much better or much later than
    anything available, unless --allow-fresh.
    """
    from nanecho_core.errors import NanechoError
    from nanecho_core.fsio import atomic_write_text
    from nanecho_core.github import write_outputs
    from nanecho_core.presets import preset_model_fingerprint
    from nanecho_core.selection import select_checkpoint, selection_json
    from nanecho_core.store import refuse_kept_file, run_paths

    if mode not in ("min", "max"):
        raise NanechoError(f"--mode must be min or max, got {mode!r}")
    paths = run_paths(root, run_dir)
    refuse_kept_file(out, paths, "--out")
    fingerprint = preset_model_fingerprint(preset, config)
    doc = select_checkpoint(
        paths,
        model_fingerprint=fingerprint,
        metric=metric,
        mode=mode,
        artifact_dir=artifact_dir,
        allow_fresh=allow_fresh,
    )
    atomic_write_text(out, selection_json(doc))
    chosen = doc["chosen"]
    write_outputs(
        {
            "resume_path": doc["resume_path"],
            "source": doc["source"],
            "iteration": chosen["iteration"] if chosen else 0,
            "checkpoint_id": chosen["id"] if chosen else None,
        }
    )
    if as_json:
        echo_json(doc)
        return
    head = f"{doc['source']}: {chosen['id']}" if chosen else "fresh"
    typer.echo(f"{head} — {doc['reason']}")
    if doc["regression"]:
        typer.echo(f"regression accepted (--allow-fresh): {doc['regression_detail']}")
    typer.echo(f"{len(doc['rejected'])} candidate(s) rejected; details in {out}")


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()

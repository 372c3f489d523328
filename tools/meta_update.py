"""meta-update: record sessions in the checkpoint index, inspect it, and fix it by hand."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from nanecho_core.errors import NanechoError
from nanecho_tools._cli import App, JsonFlag, RootDir, RunDir, echo_json, run

app = App(
    help="Maintain a run's checkpoint index (cache/metadata.json) and sessions log.", no_args_is_help=True
)

Root = RootDir
IdArg = Annotated[str, typer.Argument(help="Checkpoint id, e.g. ckpt-20261124T000000Z-a1b2c3-00000300.")]


def _paths(root: Path, run_dir: Path) -> Any:
    from nanecho_core.store import run_paths

    return run_paths(root, run_dir)


def _edit(root: Path, run_dir: Path, change: Any, *, entry: bool = False) -> Any:
    """Lock, load, apply `change(paths, doc)`, recompute, validate, write atomically.

    `entry`: the change concerns one entry (by id), so its errors name the index file.
    """
    from nanecho_core.index import update
    from nanecho_core.store import load_metadata, locked

    paths = _paths(root, run_dir)
    with locked(paths), _about(paths.metadata) if entry else contextlib.nullcontext():
        doc = load_metadata(paths, missing_ok=False)
        result = change(paths, doc)
        update(paths, doc)
    return result


@contextlib.contextmanager
def _about(index_file: Path) -> Iterator[None]:
    """Errors about an entry ("no checkpoint 'x'", a refused field) name the index they concern."""
    try:
        yield
    except NanechoError as exc:
        if exc.path is None:
            exc.path = str(index_file)
        raise


@app.command()
def record(
    step_json: Annotated[Path, typer.Argument(help="step.json written by train-step.")],
    run_dir: RunDir,
    root: Root = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Add a session and its checkpoints to the index (idempotent).

    Example: meta-update record step.json --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.github import write_outputs
    from nanecho_core.index import load_step, record_session
    from nanecho_core.store import locked

    step = load_step(step_json)
    paths = _paths(root, run_dir)
    with locked(paths):
        result = record_session(paths, step, step_json)
    write_outputs({"best_id": result.best_id, "best_file": result.best_file, "latest_id": result.latest_id})
    if as_json:
        echo_json({**result.__dict__})
        return
    if not result.changed:
        typer.echo(f"session {result.session_id} already recorded: nothing added")
    else:
        typer.echo(f"recorded session {result.session_id}: {len(result.added)} checkpoint(s) added")
    typer.echo(f"best: {result.best_id}\nlatest: {result.latest_id}")


@app.command()
def show(
    run_dir: RunDir,
    checkpoint: Annotated[
        str | None, typer.Argument(help="Checkpoint id (default: the whole index).")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Print one entry, or the whole index, as JSON.

    Example: meta-update show --run .training-progress/nanecho-cached-ci ckpt-...-00000300
    """
    from nanecho_core.index import find
    from nanecho_core.store import load_metadata

    paths = _paths(root, run_dir)
    with _about(paths.metadata):
        doc = load_metadata(paths, missing_ok=False)
        echo_json(find(doc, checkpoint) if checkpoint else doc)


@app.command("list")
def list_(run_dir: RunDir, root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """A table of checkpoints (id, iteration, losses, status, best/latest markers).

    Example: meta-update list --run .training-progress/nanecho-cached-ci --json
    """
    from nanecho_core.store import load_metadata

    doc = load_metadata(_paths(root, run_dir), missing_ok=False)
    rows = [
        {
            "id": e["id"],
            "iteration": e["iteration"],
            "train_loss": e["metrics"]["train_loss"],
            "val_loss": e["metrics"]["val_loss"],
            "status": e["status"],
            "mark": ("B" if e["id"] == doc["best_id"] else "") + ("L" if e["id"] == doc["latest_id"] else ""),
        }
        for e in doc["checkpoints"]
    ]
    if as_json:
        echo_json(rows)
        return
    typer.echo(f"{'':2} {'id':<48} {'iter':>8} {'train':>8} {'val':>8} status")
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        typer.echo(
            f"{r['mark']:2} {r['id']:<48} {r['iteration']:>8} {fmt(r['train_loss']):>8} "
            f"{fmt(r['val_loss']):>8} {r['status']}"
        )
    typer.echo(f"{len(rows)} checkpoint(s); B = best ({doc['quality']['metric']}), L = latest")


@app.command()
def validate(
    run_dir: RunDir,
    root: Root = Path("."),
    no_hashes: Annotated[bool, typer.Option("--no-hashes", help="Skip sha256 of checkpoint files.")] = False,
    metadata_only: Annotated[
        bool,
        typer.Option(
            "--metadata-only",
            help="Check only what git holds (schema, lineage, best/latest, sessions), not the weight files: "
            "for a fresh clone whose weights live in the cache.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check schema, files, hashes, lineage and best/latest; exit 2 listing every problem.

    Example: meta-update validate --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.index_check import run_problems

    paths = _paths(root, run_dir)
    problems, count = run_problems(paths, check_hashes=not no_hashes, check_files=not metadata_only)
    if as_json:
        echo_json({"ok": not problems, "checked": count, "problems": problems})
    elif not problems:
        typer.echo(f"ok: {count} checkpoint(s) consistent")
    for problem in problems if not as_json else []:
        typer.echo(f"Error: {paths.metadata}: {problem}", err=True)
    if problems:
        raise typer.Exit(2)


@app.command("set")
def set_(
    checkpoint: IdArg,
    field: Annotated[
        str, typer.Argument(help="Field, dotted for nested ones: status, metrics.val_loss, ...")
    ],
    value: Annotated[
        str,
        typer.Argument(
            help='JSON value (2.5, null, true, "text") or a plain string. A negative number goes after '
            "`--`, options first: set --run DIR ID FIELD -- -1."
        ),
    ],
    run_dir: RunDir,
    root: Root = Path("."),
) -> None:
    """Fix one field of one entry; validated before writing, unknown fields refused.

    Example: meta-update set ckpt-...-00000300 metrics.train_loss null --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.index import parse_value, set_field

    def change(paths: Any, doc: dict[str, Any]) -> Any:
        old, new = set_field(doc, checkpoint, field, parse_value(value))
        if field == "file":
            paths.checkpoint_file(str(new))
        return old, new

    old, new = _edit(root, run_dir, change, entry=True)
    typer.echo(f"{checkpoint}: {field} {old!r} -> {new!r}")


@app.command()
def tag(checkpoint: IdArg, tag: str, run_dir: RunDir, root: Root = Path(".")) -> None:
    """Add a tag to an entry; the tag `keep` pins a checkpoint and its ancestors against prune.

    Example: meta-update tag ckpt-...-00000300 keep --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.index import add_tag

    added = _edit(root, run_dir, lambda paths, doc: add_tag(doc, checkpoint, tag), entry=True)
    typer.echo(f"{checkpoint}: tag {tag} {'added' if added else 'already present'}")


@app.command()
def note(checkpoint: IdArg, text: str, run_dir: RunDir, root: Root = Path(".")) -> None:
    """Append a note to an entry.

    Example: meta-update note ckpt-...-00000300 "eval data changed after this" --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.index import add_note

    _edit(root, run_dir, lambda paths, doc: add_note(doc, checkpoint, text), entry=True)
    typer.echo(f"{checkpoint}: note added")


@app.command()
def remove(checkpoint: IdArg, run_dir: RunDir, root: Root = Path(".")) -> None:
    """Drop an entry from the index (its files stay); refused while it is another entry's parent.

    Example: meta-update remove ckpt-...-00000300 --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.index import remove_entry

    _edit(root, run_dir, lambda paths, doc: remove_entry(doc, checkpoint), entry=True)
    typer.echo(f"removed {checkpoint} from the index")


@app.command("mark-missing")
def mark_missing(run_dir: RunDir, root: Root = Path(".")) -> None:
    """Mark `ok` entries whose file is gone as `missing`.

    Example: meta-update mark-missing --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.index import mark_missing as mark

    changed = _edit(root, run_dir, lambda paths, doc: mark(paths, doc))
    for cid in changed:
        typer.echo(f"missing: {cid}")
    typer.echo(f"{len(changed)} entr{'y' if len(changed) == 1 else 'ies'} marked missing")


@app.command()
def prune(
    run_dir: RunDir,
    keep_best: Annotated[int, typer.Option(help="Keep the K best checkpoints.")] = 3,
    keep_last: Annotated[int, typer.Option(help="Keep the N most recent checkpoints.")] = 2,
    dry_run: Annotated[bool, typer.Option(help="Print what would be deleted; change nothing.")] = False,
    root: Root = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Delete checkpoint files not worth keeping; never the best, the latest, or a needed ancestor.

    Example: meta-update prune --keep-best 3 --keep-last 2 --dry-run --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.ids import utc_now
    from nanecho_core.index import update
    from nanecho_core.retention import apply_prune, plan_prune
    from nanecho_core.store import load_metadata, locked

    paths = _paths(root, run_dir)
    if dry_run:  # read-only: not even the lock file is created
        plan = plan_prune(paths, load_metadata(paths, missing_ok=False), keep_best, keep_last)
    else:
        with locked(paths):
            doc = load_metadata(paths, missing_ok=False)
            plan = plan_prune(paths, doc, keep_best, keep_last)
            if plan.delete:
                problem = apply_prune(paths, doc, plan, utc_now())
                update(paths, doc)  # what was deleted is recorded even when a later delete failed
                if problem:
                    raise problem
    if as_json:
        echo_json(
            {
                "dry_run": dry_run,
                "delete": [e["id"] for e in plan.delete],
                "keep": plan.keep,
                "freed_bytes": plan.freed_bytes,
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    for entry in plan.delete:
        typer.echo(f"{verb} {entry['file']}")
    for cid, why in plan.keep.items():
        typer.echo(f"kept {cid} ({why})")
    typer.echo(
        f"{verb} {len(plan.delete)} checkpoint(s), {'would free' if dry_run else 'freed'} {plan.freed_bytes} bytes"
    )


@app.command()
def rescore(
    run_dir: RunDir,
    metric: Annotated[str | None, typer.Option(help="New quality metric (default: keep).")] = None,
    mode: Annotated[str | None, typer.Option(help="min or max (default: keep).")] = None,
    root: Root = Path("."),
) -> None:
    """Recompute best/latest (optionally with another metric/mode).

    Example: meta-update rescore --metric val_loss --mode min --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.index import rescore as do_rescore

    old, new = _edit(root, run_dir, lambda paths, doc: do_rescore(doc, metric, mode))
    typer.echo(f"best: {old} -> {new}" if old != new else f"best unchanged: {new}")


@app.command()
def migrate(run_dir: RunDir, root: Root = Path(".")) -> None:
    """Upgrade metadata.json from an older schema_version (1) to the current one.

    Example: meta-update migrate --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.fsio import read_json
    from nanecho_core.legacy import migrate as do_migrate
    from nanecho_core.store import locked, save_metadata

    paths = _paths(root, run_dir)
    with locked(paths):
        doc, changed = do_migrate(read_json(paths.metadata), str(paths.metadata))
        if changed:
            save_metadata(paths, doc)
    typer.echo(f"migrated to schema_version {doc['schema_version']}" if changed else "already current")


@app.command()
def compact(
    run_dir: RunDir,
    older_than: Annotated[float, typer.Option(help="Fold pruned entries older than DAYS.")] = 90.0,
    root: Root = Path("."),
) -> None:
    """Fold entries of pruned checkpoints older than the horizon into per-session aggregate rows.

    Example: meta-update compact --older-than 90 --run .training-progress/nanecho-cached-ci
    """
    import datetime as dt

    from nanecho_core.retention import compact as do_compact

    now = dt.datetime.now(dt.UTC)
    folded = _edit(root, run_dir, lambda paths, doc: do_compact(doc, older_than, now))
    typer.echo(f"folded {len(folded)} pruned entr{'y' if len(folded) == 1 else 'ies'} into aggregates")


@app.command("import-legacy")
def import_legacy(
    legacy_file: Annotated[Path, typer.Argument(help="The older echoself metadata.json.")],
    run_dir: RunDir,
    root: Root = Path("."),
) -> None:
    """Convert the older echoself metadata into this run's index (existing ids are kept).

    Example: meta-update import-legacy old/metadata.json --run .training-progress/nanecho-cached-ci
    """
    from nanecho_core.fsio import read_json
    from nanecho_core.index import update
    from nanecho_core.legacy import convert_legacy
    from nanecho_core.store import load_metadata, locked

    paths = _paths(root, run_dir)
    imported, report = convert_legacy(read_json(legacy_file), paths.name, str(legacy_file))
    with locked(paths):
        doc = load_metadata(paths)
        known = {e["id"] for e in doc["checkpoints"]}
        added = [e for e in imported["checkpoints"] if e["id"] not in known]
        doc["checkpoints"].extend(added)
        update(paths, doc)
    for line in report:
        typer.echo(line)
    typer.echo(
        f"imported {len(added)} of {len(imported['checkpoints'])} legacy checkpoint(s); best: {doc['best_id']}"
    )


@app.command("merge-driver")
def merge_driver(
    base: Annotated[str, typer.Argument(help="%O: the common ancestor.")],
    ours: Annotated[str, typer.Argument(help="%A: our side; the result is written here.")],
    theirs: Annotated[str, typer.Argument(help="%B: their side.")],
) -> None:
    """git merge driver for metadata.json: union by id, newer values win, best/latest recomputed.

    Example (.git/config): driver = meta-update merge-driver %O %A %B
    """
    from nanecho_core.index_merge import merge_files

    doc = merge_files(base, ours, theirs)
    typer.echo(f"merged metadata: {len(doc['checkpoints'])} checkpoint(s)", err=True)


@app.command("install-merge-driver")
def install_merge_driver(root: Root = Path(".")) -> None:
    """Register the nanecho-metadata merge driver in the repository's .git/config.

    Example: meta-update install-merge-driver --root .
    """
    from nanecho_core.index_merge import install_merge_driver as install

    install(root)
    typer.echo("merge.nanecho-metadata.driver = meta-update merge-driver %O %A %B")


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()

"""Derive each run's training summary from its sessions log and checkpoint index.

Everything here is a pure function of the run files: the same inputs give byte-identical
training_summary.json and PROGRESS.md (no "generated at" stamps; times come from the data).
"""

from __future__ import annotations

import datetime as dt
import gc
import heapq
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanecho_core.errors import NanechoError
from nanecho_core.fsio import atomic_write_text, dumps_canonical, file_holds, resolved
from nanecho_core.store import PROGRESS_DIR, PROGRESS_FILE, RunPaths, load_metadata, read_sessions, run_paths

log = logging.getLogger(__name__)

SUMMARY_SCHEMA_VERSION = 1  # schemas/summary.schema.json
RECENT_SESSIONS = 20  # rows in the sessions tables
TREND_WINDOW = 5  # sessions the trend looks back over
CURVE_POINTS = 32  # points of the best-loss-over-tokens curve kept in the JSON
FLAGGED_KEPT = 50  # newest flagged sessions listed in the JSON (counts cover all)
# A resumed checkpoint this much worse (relative) than the best known is a regression:
# small enough to catch real regressions, large enough to ignore eval noise of a re-evaluation.
REGRESSION_TOLERANCE = 0.01
TREND_TOLERANCE = 0.01
RESUME_SOURCES = ("cache", "artifact", "fresh", "init")
STOP_REASONS = ("budget_iters", "budget_time", "signal", "early_stop", "error")
# Flags: the first two make a session a reset, the third a regression.
FRESH_RESTART = "fresh_restart"
OLDER_CHECKPOINT = "older_checkpoint"
WORSE_CHECKPOINT = "worse_checkpoint"
RESET_FLAGS = (FRESH_RESTART, OLDER_CHECKPOINT)


@dataclass(frozen=True)
class SessionRow:
    """One session as the renderers need it: ordered, with cumulative tokens and flags."""

    index: int  # 1-based position in the run's history
    record: dict[str, Any]
    tokens_before: int  # tokens trained by all earlier sessions (the cumulative-token axis)
    tokens: int  # tokens trained in this session
    flags: tuple[str, ...]
    prior_max_iteration: int
    best_known_val_loss: float | None
    resumed_val_loss: float | None
    best_after: float | None  # the run's best val loss once this session ended
    evals: tuple[tuple[float, float], ...] = ()  # (cumulative tokens, val loss) per evaluation

    @property
    def session_id(self) -> str:
        return str(self.record["session_id"])

    @property
    def is_reset(self) -> bool:
        return any(f in RESET_FLAGS for f in self.flags)

    @property
    def is_regression(self) -> bool:
        return WORSE_CHECKPOINT in self.flags

    def eval_curve(self) -> tuple[tuple[float, float], ...]:
        """(cumulative tokens, val loss) of every evaluation in this session."""
        return self.evals


def _eval_curve(rec: dict[str, Any], tokens_before: int, tokens: int) -> tuple[tuple[float, float], ...]:
    # Hot path (10,000 sessions × ~20 evals): one comprehension, no per-point function calls.
    start, end = rec["start_iteration"], rec["end_iteration"]
    points = rec.get("eval_points")
    if points:
        per_iter = tokens / (end - start) if end > start else 0.0
        last = tokens_before + tokens
        return tuple(
            (
                float(last)
                if end <= start or p[0] >= end
                else float(tokens_before)
                if p[0] <= start
                else tokens_before + (p[0] - start) * per_iter,
                float(p[1]),
            )
            for p in points
        )
    if rec["end_val_loss"] is None:
        return ()
    pairs = [(float(tokens_before + tokens), float(rec["end_val_loss"]))]
    if rec["start_val_loss"] is not None:
        pairs.insert(0, (float(tokens_before), float(rec["start_val_loss"])))
    return tuple(pairs)


@dataclass(frozen=True)
class RunView:
    """A run's derived summary document plus the ordered sessions behind it."""

    paths: RunPaths
    summary: dict[str, Any]
    sessions: list[SessionRow]
    curve: list[tuple[float, float]]  # best val loss so far at each improvement (cumulative tokens)

    @property
    def name(self) -> str:
        return self.paths.name


def parse_timestamp(text: str) -> dt.datetime:
    """A timestamp that passed fastschema.is_date_time (any case of T and Z, any fraction length)."""
    return dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))


def order_sessions(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sessions by start time (then id), duplicates dropped.

    sessions.jsonl is merged with `merge=union`, so two sides of a rebase may interleave or repeat
    lines; ordering by content makes the summary independent of the merge order.
    """
    seen: dict[str, dict[str, Any]] = {}
    for record in records:
        seen.setdefault(record["session_id"], record)
    return sorted(seen.values(), key=lambda r: (parse_timestamp(r["started_at"]), r["session_id"]))


def _session_tokens(rec: dict[str, Any]) -> int:
    trained = rec["end_iteration"] - rec["start_iteration"]
    tokens_seen = rec.get("tokens_seen")
    if tokens_seen and rec["end_iteration"] > 0:
        share = tokens_seen * trained / rec["end_iteration"]
        if not math.isfinite(share):  # schema-valid integers as large as 1e308: exact integer arithmetic
            share = int(tokens_seen) * int(trained) // int(rec["end_iteration"])
        return max(0, round(share))
    if rec.get("tokens_per_s"):
        estimate = rec["tokens_per_s"] * rec["wall_s"]
        return max(0, round(estimate)) if math.isfinite(estimate) else 0
    return 0


def session_best(rec: dict[str, Any]) -> float | None:
    best: float | None = None
    for value in (rec["best_val_loss"], rec["end_val_loss"]):
        if value is not None and (best is None or value < best):
            best = value
    points = rec.get("eval_points")
    if points:
        low = min(p[1] for p in points)
        if best is None or low < best:
            best = low
    return best


def derive_rows(records: Sequence[dict[str, Any]], checkpoint_losses: dict[str, float]) -> list[SessionRow]:
    """Order sessions and flag resets and regressions.

    What a session "knew" is what had ended before it started: two CI jobs racing from the same
    checkpoint are not a reset, a job that starts from scratch an hour after progress was made is.
    A reset or regression is flagged once, where it happens: once a flagged session has ended, the
    run continues from it, and later sessions are compared with it rather than with the lost line.
    """
    ordered = order_sessions(records)
    # (ended_at, n, end_iteration, best val loss, flagged)
    pending: list[tuple[dt.datetime, int, int, float | None, bool]] = []
    known_max_iter = 0
    known_best: float | None = None
    run_best: float | None = None
    tokens_so_far = 0
    rows: list[SessionRow] = []
    for number, rec in enumerate(ordered):
        started = parse_timestamp(rec["started_at"])
        while pending and pending[0][0] <= started:
            _, _, end_iter, best, was_flagged = heapq.heappop(pending)
            if was_flagged:  # the run goes on from the flagged session: compare later ones with it
                known_max_iter, known_best = end_iter, best
                continue
            known_max_iter = max(known_max_iter, end_iter)
            if best is not None and (known_best is None or best < known_best):
                known_best = best
        flags: list[str] = []
        source = rec["resume_source"]
        if source == "fresh" and known_max_iter > 0:
            flags.append(FRESH_RESTART)
        elif source != "fresh" and rec["start_iteration"] < known_max_iter:
            flags.append(OLDER_CHECKPOINT)
        resumed_loss: float | None = None
        if source != "fresh":
            resumed_id = rec.get("resumed_from") or rec.get("init_from")
            resumed_loss = checkpoint_losses.get(resumed_id or "", rec["start_val_loss"])
            if (
                resumed_loss is not None
                and known_best is not None
                and resumed_loss > known_best * (1 + REGRESSION_TOLERANCE)
            ):
                flags.append(WORSE_CHECKPOINT)
        tokens = _session_tokens(rec)
        best = session_best(rec)
        if best is not None and (run_best is None or best < run_best):
            run_best = best
        rows.append(
            SessionRow(
                index=number + 1,
                record=rec,
                tokens_before=tokens_so_far,
                tokens=tokens,
                flags=tuple(flags),
                prior_max_iteration=known_max_iter,
                best_known_val_loss=known_best,
                resumed_val_loss=resumed_loss,
                best_after=run_best,
                evals=_eval_curve(rec, tokens_so_far, tokens),
            )
        )
        tokens_so_far += tokens
        heapq.heappush(
            pending, (parse_timestamp(rec["ended_at"]), number, rec["end_iteration"], best, bool(flags))
        )
    return rows


def best_curve(rows: Sequence[SessionRow]) -> list[tuple[float, float]]:
    """(cumulative tokens, best val loss so far) at every improvement."""
    curve: list[tuple[float, float]] = []
    best: float | None = None
    for row in rows:
        for x, val in row.eval_curve():
            if best is None or val < best:
                best = val
                curve.append((x, val))
    return curve


def downsample(points: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` items, evenly spread, always keeping the first and the last."""
    if len(points) <= limit:
        return list(points)
    if limit <= 1:
        return [points[-1]]
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def sample_stride(count: int, limit: int) -> int:
    """The stride `stable_sample` uses for `count` items: 1 when all of them fit."""
    stride = 1
    if count > limit:
        while (count - 2) // stride + 2 > limit:
            stride *= 2
    return stride


def stable_sample(points: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` items: every stride-th (stride a power of two) plus the last.

    Unlike `downsample`, the picks do not move when an item is appended (until the stride doubles),
    so a committed file that shows the sample changes by a line per session, not all its lines.
    """
    stride = sample_stride(len(points), limit)
    if stride == 1:
        return list(points)
    picked = list(points[::stride])
    if (len(points) - 1) % stride:
        picked.append(points[-1])
    return picked


def build_run(paths: RunPaths) -> RunView:
    """Read (and validate) one run's files and derive its summary."""
    if not paths.dir.is_dir():
        raise NanechoError("run directory not found", paths.dir)
    index = load_metadata(paths)
    records = read_sessions(paths)
    for rec in records:
        if rec["end_iteration"] < rec["start_iteration"]:
            raise NanechoError(
                f"session {rec['session_id']}: end_iteration {rec['end_iteration']} is before "
                f"start_iteration {rec['start_iteration']}",
                paths.sessions,
            )
    losses = {e["id"]: e["metrics"]["val_loss"] for e in index["checkpoints"] if e["metrics"]["val_loss"]}
    from nanecho_core.summary_doc import run_summary

    rows = derive_rows(records, losses)
    curve = best_curve(rows)
    return RunView(paths=paths, summary=run_summary(paths, index, rows, curve), sessions=rows, curve=curve)


def discover_runs(root: Path) -> list[RunPaths]:
    """Subdirectories of <root>/.training-progress holding sessions.jsonl or cache/metadata.json."""
    base = root / PROGRESS_DIR
    if not base.is_dir():
        return []
    found = []
    for child in sorted(base.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            paths = RunPaths(root=root, dir=child)
            if paths.sessions.is_file() or paths.metadata.is_file():
                found.append(run_paths(root, f"{PROGRESS_DIR}/{child.name}"))
    return found


def collect(root: Path, runs: Sequence[RunPaths] | None = None) -> tuple[list[RunView], list[RunView]]:
    """(selected runs, every run for PROGRESS.md): the given runs plus the discovered ones."""
    discovered = discover_runs(root)
    selected = list(runs) if runs else discovered
    if not selected:
        raise NanechoError(f"no runs found under {PROGRESS_DIR}/ (give --run)", root)
    everything: dict[str, RunPaths] = {}
    for paths in [*discovered, *selected]:
        other = everything.get(paths.name)
        if other is not None and resolved(other.dir) != resolved(paths.dir):
            raise NanechoError(f"two runs are named {paths.name!r}: {other.dir} and {paths.dir}", paths.dir)
        everything[paths.name] = paths
    with _no_gc_pauses():
        views = {name: build_run(p) for name, p in sorted(everything.items())}
    chosen = sorted({p.name for p in selected})
    return [views[n] for n in chosen], list(views.values())


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Pause the cyclic GC while loading: 10,000 sessions are ~300,000 acyclic JSON containers, and
    the collector's repeated full passes over them cost as much as parsing them (measured 2.0 s -> 1.1 s).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def progress_path(root: Path) -> Path:
    return root / PROGRESS_DIR / PROGRESS_FILE


def render_outputs(selected: Sequence[RunView], all_views: Sequence[RunView]) -> dict[Path, str]:
    """Every derived file's path and content (nothing written yet)."""
    from nanecho_core.summary_doc import summary_document
    from nanecho_core.summary_md import progress_markdown

    outputs = {v.paths.summary: dumps_canonical(summary_document([v])) for v in selected}
    root = selected[0].paths.root
    outputs[progress_path(root)] = progress_markdown(all_views)
    return outputs


def write_outputs(outputs: dict[Path, str]) -> list[Path]:
    """Write derived files atomically; files whose content is already right are left untouched."""
    for path, text in outputs.items():
        if not file_holds(path, text.encode("utf-8")):
            atomic_write_text(path, text)
    return list(outputs)


def regenerate(root: Path, runs: list[RunPaths] | None = None) -> list[Path]:
    """Rewrite each run's training_summary.json and .training-progress/PROGRESS.md; return their paths.

    `runs` defaults to every run under .training-progress; PROGRESS.md always covers all runs.
    """
    selected, all_views = collect(Path(root), runs)
    return write_outputs(render_outputs(selected, all_views))

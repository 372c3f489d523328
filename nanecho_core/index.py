"""Index operations on cache/metadata.json: best/latest, record a session, one-off fixes.

Rules (docs/metadata.md):
- Entries are kept sorted by (created_at, id), so a record appends and a merge is deterministic.
- `latest_id`: the newest entry (created_at, then iteration, then id) whose status is `ok` or
  `missing` (weights that exist or may exist in another tier) and that is not tagged `suspect*`.
- `best_id`: among those, the best by the index's quality metric/mode, but only on the eval set of
  the latest entry: losses measured on different eval sets are not comparable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import dumps_canonical, parse_json, read_bytes, read_json, safe_join, sha256_file
from nanecho_core.store import (
    RunPaths,
    append_session,
    is_verified,
    load_metadata,
    read_metadata,
    read_metadata_bytes,
    save_metadata,
    write_verified_metadata,
)

log = logging.getLogger(__name__)

ELIGIBLE_STATUSES = ("ok", "missing")
SUSPECT_PREFIX = "suspect"


def time_key(stamp: str) -> tuple[str, str]:
    """Sortable key of an RFC 3339 `...Z` stamp ("…:29Z" sorts before "…:29.3Z"; "t" sorts as "T")."""
    return (stamp[:19].upper(), stamp[19:-1])


def sort_key(entry: dict[str, Any]) -> tuple[tuple[str, str], str]:
    return (time_key(entry["created_at"]), entry["id"])


def latest_key(entry: dict[str, Any]) -> tuple[tuple[str, str], int, str]:
    return (time_key(entry["created_at"]), entry["iteration"], entry["id"])


def progress_key(entry: dict[str, Any]) -> tuple[int, tuple[tuple[str, str], int, str]]:
    """Most trained first when sorted in reverse: the iteration, then the newest (a lineage's head)."""
    return (entry["iteration"], latest_key(entry))


def is_eligible(entry: dict[str, Any]) -> bool:
    """Counts for best/latest: weights exist (or may, in another tier) and nothing flagged it."""
    suspect = any(tag.startswith(SUSPECT_PREFIX) for tag in entry["tags"])
    return entry["status"] in ELIGIBLE_STATUSES and not suspect


def metric_of(entry: dict[str, Any], metric: str) -> float | None:
    value = entry["metrics"].get(metric)
    return None if value is None else float(value)


LINEAGE_KEYS = ("model_fingerprint", "data_fingerprint", "eval_fingerprint")


def lineage(root: dict[str, Any], entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries that continue `root`'s lineage: later checkpoints on its model, data and eval set
    that descend from it through `parent_id` links along which the iteration always grows.

    An `--init-from` restarts the count at 0, so its link ends a lineage: a restart from the best
    is a new line, never its continuation. Linear in the number of entries (each id's answer is
    remembered for the whole path walked to find it); cycles and unknown parents end a walk.
    """
    entries = list(entries)
    by_id = {e["id"]: e for e in entries}
    by_id[root["id"]] = root
    known: dict[str, bool] = {root["id"]: True}
    for entry in entries:
        path: list[str] = []
        cid: str | None = entry["id"]
        while cid is not None and cid not in known:
            node = by_id.get(cid)
            parent = node["parent_id"] if node else None
            if (
                node is None
                or cid in path
                or (parent in by_id and by_id[parent]["iteration"] >= node["iteration"])
            ):
                cid = None
                break
            path.append(cid)
            cid = parent
        reached = cid is not None and known[cid]
        for visited in path:
            known[visited] = reached
    return [
        e
        for e in entries
        if e["id"] != root["id"]
        and known.get(e["id"])
        and e["iteration"] > root["iteration"]
        and all(e[k] == root[k] for k in LINEAGE_KEYS)
    ]


def pick_latest(entries: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    return max((e for e in entries if is_eligible(e)), key=latest_key, default=None)


def pick_best(
    entries: Iterable[dict[str, Any]], metric: str, mode: str, eval_fingerprint: str | None
) -> dict[str, Any] | None:
    """Best by metric on one eval set; ties go to the later checkpoint."""
    scored = [
        e
        for e in entries
        if is_eligible(e) and metric_of(e, metric) is not None and e["eval_fingerprint"] == eval_fingerprint
    ]
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    best = scored[0]
    best_rank = (sign * (metric_of(best, metric) or 0.0), latest_key(best))
    for entry in scored[1:]:
        score = sign * (metric_of(entry, metric) or 0.0)
        if score < best_rank[0] or (score == best_rank[0] and latest_key(entry) > best_rank[1]):
            best, best_rank = entry, (score, latest_key(entry))
    return best


def recompute(doc: dict[str, Any]) -> dict[str, Any]:
    """Sort entries canonically and recompute best_id/latest_id in place; returns doc."""
    doc["checkpoints"].sort(key=sort_key)
    latest = pick_latest(doc["checkpoints"])
    quality = doc["quality"]
    best = pick_best(
        doc["checkpoints"], quality["metric"], quality["mode"], latest["eval_fingerprint"] if latest else None
    )
    doc["latest_id"] = latest["id"] if latest else None
    doc["best_id"] = best["id"] if best else None
    return doc


def find(doc: dict[str, Any], cid: str) -> dict[str, Any]:
    for entry in doc["checkpoints"]:
        if entry["id"] == cid:
            return entry
    raise NanechoError(f"no checkpoint {cid!r} in the index")


# --- record -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordResult:
    session_id: str
    added: list[str]
    skipped: list[str]
    session_appended: bool
    best_id: str | None
    best_file: str | None
    latest_id: str | None
    fast_path: bool

    @property
    def changed(self) -> bool:
        return bool(self.added) or self.session_appended


def load_step(path: str | Path) -> dict[str, Any]:
    """Read and validate a step.json (a session record with `checkpoints`)."""
    return dict(fastschema.validate(read_json(path), "session", path))


def record_session(
    paths: RunPaths, step: dict[str, Any], step_path: str | Path = "step.json"
) -> RecordResult:
    """Add a session and its checkpoints to the run; idempotent. Caller holds store.locked(paths)."""
    if step["run"] != paths.name:
        raise NanechoError(f"session belongs to run {step['run']!r}, not {paths.name!r}", step_path, "$.run")
    entries = list(step.get("checkpoints", []))
    for number, entry in enumerate(entries):
        try:
            safe_join(paths.dir, entry["file"], what="checkpoint file")
        except NanechoError as exc:
            raise NanechoError(exc.message, step_path, f"$.checkpoints[{number}].file") from None
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise NanechoError("duplicate checkpoint ids", step_path, "$.checkpoints")
    entries = _unrecorded_ancestors(paths, entries) + entries
    appended = not _session_logged(paths, step["session_id"])  # read first: unreadable changes nothing
    accepted_reset = bool(step.get("regression_allowed"))
    fast = None if accepted_reset else _record_fast(paths, entries)
    if fast is None:
        doc = load_metadata(paths)
        known = {e["id"] for e in doc["checkpoints"]}
        added = [e for e in entries if e["id"] not in known]
        doc["checkpoints"].extend(added)
        abandoned = abandon_other_lineages(doc, step) if accepted_reset else []
        recompute(doc)
        if added or abandoned or not paths.metadata.exists():  # created on the first record, even empty
            save_metadata(paths, doc)
        best = next((e for e in doc["checkpoints"] if e["id"] == doc["best_id"]), None)
        outcome = ([e["id"] for e in added], doc["best_id"], best["file"] if best else None, doc["latest_id"])
    else:
        outcome = fast
    added_ids, best_id, best_file, latest_id = outcome
    if appended:
        append_session(paths, step)
    return RecordResult(
        session_id=step["session_id"],
        added=added_ids,
        skipped=[i for i in ids if i not in added_ids],
        session_appended=appended,
        best_id=best_id,
        best_file=best_file,
        latest_id=latest_id,
        fast_path=fast is not None,
    )


ABANDONED_TAG = "suspect-abandoned-at-reset"


def abandon_other_lineages(doc: dict[str, Any], step: dict[str, Any]) -> list[str]:
    """Tag the checkpoints a session gave up on when it accepted a reset (`--allow-fresh`).

    The regression guard compares what is resumed with everything the index ever recorded. Once a
    user accepts losing the better checkpoints, they must stop counting, or every later run would be
    refused again until the new line of training beats the lost one. Entries outside this session's
    lineage get a `suspect-…` tag and a note: kept for history, excluded from best and from the guard.
    """
    by_id = {e["id"]: e for e in doc["checkpoints"]}
    lineage: set[str] = set()
    frontier = [*step.get("checkpoints_written", []), step.get("resumed_from"), step.get("init_from")]
    while frontier:
        cid = frontier.pop()
        if cid and cid not in lineage:
            lineage.add(cid)
            parent = by_id.get(cid, {}).get("parent_id")
            frontier.append(parent)
    abandoned = []
    for entry in doc["checkpoints"]:
        if entry["id"] in lineage or any(t.startswith(SUSPECT_PREFIX) for t in entry["tags"]):
            continue
        entry["tags"] = [*entry["tags"], ABANDONED_TAG]
        entry["notes"] = [
            *entry["notes"],
            f"abandoned: session {step['session_id']} accepted a reset (--allow-fresh) and did not resume from it",
        ]
        abandoned.append(entry["id"])
    return abandoned


def _unrecorded_ancestors(paths: RunPaths, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Verified checkpoints this session descends from that no record ever indexed.

    A job killed between train-step and `meta-update record` leaves a checkpoint with its sidecar
    but no index entry; the next session resumes from it (ckpt-select reads sidecars). Without
    adopting it here the index gets a lineage hole that `validate` reports and nothing repairs.
    """
    data = read_metadata_bytes(paths) or b""
    have = {e["id"] for e in entries}
    check = fastschema.checker("metadata", "checkpoint")
    adopted: list[dict[str, Any]] = []
    for entry in entries:
        parent = entry["parent_id"]
        while parent and parent not in have and _id_line(parent) not in data:
            sidecar = paths.checkpoints_dir / f"{parent}.json"
            try:
                doc = parse_json(sidecar.read_text(encoding="utf-8"), sidecar)
                path = paths.checkpoint_file(doc["file"]) if check(doc) and doc["id"] == parent else None
            except (OSError, UnicodeDecodeError, NanechoError):
                break
            if path is None or doc["status"] != "ok" or not path.is_file():
                break
            if path.stat().st_size != doc["bytes"] or sha256_file(path) != doc["sha256"]:
                break
            log.info("adopting %s: recorded by no session, verified by its sidecar", parent)
            adopted.append(dict(doc))
            have.add(parent)
            parent = doc["parent_id"]
    return sorted(adopted, key=sort_key)


def _session_logged(paths: RunPaths, session_id: str) -> bool:
    """Whether sessions.jsonl has this session (its lines are dumps_line output: compact, sorted)."""
    try:
        data = read_bytes(paths.sessions)
    except FileNotFoundError:
        return False
    except OSError as exc:  # a directory, a symlink loop
        raise NanechoError(f"cannot read: {exc.strerror or exc}", paths.sessions) from exc
    return ('"session_id":' + json.dumps(session_id)).encode() in data


_ARRAY_OPEN = b'\n  "checkpoints": [\n'
_ARRAY_CLOSE = b'\n  ],\n  "latest_id": '
_ENTRY_OPEN = b"\n    {\n"
_ENTRY_CLOSE = b"\n    }"


def _id_line(cid: str) -> bytes:
    return f'\n      "id": {json.dumps(cid)},\n'.encode()


def _record_fast(paths: RunPaths, entries: Sequence[dict[str, Any]]) -> tuple[Any, ...] | None:
    """Splice new entries into verified bytes without parsing the whole index.

    Returns (added ids, best_id, best_file, latest_id), or None when the slow path must decide
    (no verified file, empty index, entries not in append order, or the eval set changed).
    The result is byte-identical to the slow path (tests assert it).
    """
    found = read_metadata(paths)
    if found is None or not is_verified(paths, *found):
        return None
    data = found[0]
    start = data.find(_ARRAY_OPEN)
    end = data.find(_ARRAY_CLOSE, start)
    if start < 0 or end < 0:
        return None
    new = [e for e in entries if _id_line(e["id"]) not in data]
    head = parse_json((data[:start] + b'\n  "checkpoints": []\n}').decode("utf-8"))
    tail = parse_json("{" + data[end + len(b"\n  ],") :].decode("utf-8"))
    last = _entry_at(data, data.rfind(_ENTRY_OPEN, start, end), end)
    old_latest = _entry_by_id(data, tail["latest_id"], start, end)
    old_best = _entry_by_id(data, head["best_id"], start, end)
    if not new:
        best_file = old_best["file"] if old_best else None
        return ([], head["best_id"], best_file, tail["latest_id"])
    ordered = sorted(new, key=sort_key)
    if [e["id"] for e in ordered] != [e["id"] for e in new] or sort_key(new[0]) <= sort_key(last):
        return None
    latest = pick_latest([*([old_latest] if old_latest else []), *new])
    if old_latest and latest and latest["eval_fingerprint"] != old_latest["eval_fingerprint"]:
        return None
    quality = tail["quality"]
    pool = [*([old_best] if old_best else []), *new]
    best = pick_best(pool, quality["metric"], quality["mode"], latest["eval_fingerprint"] if latest else None)
    check = fastschema.checker("metadata", "checkpoint")
    if not all(check(e) for e in new):
        return None
    block = "".join("," + _indent(dumps_canonical(e), 4) for e in new).encode("utf-8")
    best_id = best["id"] if best else None
    latest_id = latest["id"] if latest else None
    old_best_line = _key_line("best_id", head["best_id"])
    old_latest_line = _key_line("latest_id", tail["latest_id"])
    if data.count(old_best_line, 0, start) != 1 or data.count(old_latest_line, end) != 1:
        return None  # not the canonical layout: let the slow path rewrite it
    out = b"".join(
        (
            data[:start].replace(old_best_line, _key_line("best_id", best_id)),
            memoryview(data)[start:end],
            block,
            data[end:].replace(old_latest_line, _key_line("latest_id", latest_id)),
        )
    )
    write_verified_metadata(paths, out)
    return ([e["id"] for e in new], best_id, best["file"] if best else None, latest_id)


def _key_line(key: str, value: str | None) -> bytes:
    return f"\n  {json.dumps(key)}: {json.dumps(value)},".encode()


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n" + "\n".join(pad + line for line in text.rstrip("\n").split("\n"))


def _entry_at(data: bytes, open_at: int, limit: int) -> dict[str, Any]:
    close = data.find(_ENTRY_CLOSE, open_at + 1, limit + 1)
    return dict(json.loads(data[open_at + 1 : close + len(_ENTRY_CLOSE)]))


def _entry_by_id(data: bytes, cid: str | None, start: int, end: int) -> dict[str, Any] | None:
    if cid is None:
        return None
    at = data.find(_id_line(cid), start, end)
    if at < 0:
        return None
    return _entry_at(data, data.rfind(_ENTRY_OPEN, start, at), end)


# --- one-off fixes ----------------------------------------------------------------------------

# Fields `set` may change; id, best/latest and lineage-defining identity are not hand-editable.
SETTABLE = {
    "file", "sha256", "bytes", "iteration", "tokens_seen", "created_at", "session_id", "parent_id",
    "model_fingerprint", "data_fingerprint", "eval_fingerprint", "status",
    "metrics.train_loss", "metrics.val_loss", "metrics.val_bpb", "metrics.lr",
    "tokenizer.name", "tokenizer.vocab_size",
    "storage.cache_key", "storage.artifact_name", "storage.present_locally",
    "model.n_layer", "model.n_head", "model.n_embd", "model.block_size", "model.vocab_size",
    "model.dropout", "model.bias",
}  # fmt: skip


def parse_value(text: str) -> Any:
    """A command-line VALUE: JSON when it parses (2.5, null, true, "x"), else the plain string.

    Strict JSON: NaN, Infinity, 1e999 and integers beyond float range stay strings, which the
    schema then refuses by name, as it would in a file.
    """
    try:
        return parse_json(text)
    except NanechoError:
        return text


def set_field(doc: dict[str, Any], cid: str, field: str, value: Any) -> tuple[Any, Any]:
    """Set one field of one entry; returns (old, new). The caller validates and saves."""
    if field not in SETTABLE:
        allowed = ", ".join(sorted(SETTABLE))
        raise NanechoError(f"unknown or read-only field {field!r}; settable fields: {allowed}")
    entry = find(doc, cid)
    node = entry
    parts = field.split(".")
    for part in parts[:-1]:
        node = node[part]
    old = node.get(parts[-1])
    node[parts[-1]] = value
    entry["notes"].append(f"meta-update set {field}: {json.dumps(old)} -> {json.dumps(value)}")
    return old, value


def add_tag(doc: dict[str, Any], cid: str, tag: str) -> bool:
    entry = find(doc, cid)
    if tag in entry["tags"]:
        return False
    entry["tags"].append(tag)
    return True


def add_note(doc: dict[str, Any], cid: str, text: str) -> None:
    find(doc, cid)["notes"].append(text)


def remove_entry(doc: dict[str, Any], cid: str) -> dict[str, Any]:
    """Drop an entry from the index (its file stays); refused while it is another entry's parent."""
    entry = find(doc, cid)
    children = [e["id"] for e in doc["checkpoints"] if e["parent_id"] == cid]
    if children:
        raise NanechoError(f"{cid} is the parent of {', '.join(children)}; remove or re-parent those first")
    doc["checkpoints"].remove(entry)
    return entry


def mark_missing(paths: RunPaths, doc: dict[str, Any]) -> list[str]:
    """Entries marked `ok` whose file is gone become `missing`; returns their ids."""
    changed = []
    for entry in doc["checkpoints"]:
        if entry["status"] == "ok" and not paths.checkpoint_file(entry["file"]).is_file():
            entry["status"] = "missing"
            entry["storage"]["present_locally"] = False
            changed.append(entry["id"])
    return changed


def check_metric_known(entries: Iterable[dict[str, Any]], metric: str) -> None:
    """Refuse a metric no checkpoint records: a typo would otherwise rank nothing, silently."""
    recorded = {name for e in entries for name in e["metrics"]}
    if recorded and metric not in recorded:
        raise NanechoError(
            f"no checkpoint records the metric {metric!r}; recorded: {', '.join(sorted(recorded))}"
        )


def rescore(doc: dict[str, Any], metric: str | None, mode: str | None) -> tuple[str | None, str | None]:
    """Change the quality metric/mode and recompute; returns (old best, new best)."""
    old = doc["best_id"]
    if metric is not None:
        check_metric_known(doc["checkpoints"], metric)
        doc["quality"]["metric"] = metric
    if mode is not None:
        doc["quality"]["mode"] = mode
    recompute(doc)
    return old, doc["best_id"]


def update(paths: RunPaths, doc: dict[str, Any]) -> None:
    """Recompute best/latest, validate, write atomically (nothing written when invalid)."""
    recompute(doc)
    save_metadata(paths, doc)

"""The git merge driver for cache/metadata.json: union of checkpoints by id, then best/latest recomputed.

Per field, a three-way rule against the common ancestor %O: a value changed on one side only wins;
changed on both sides, the %B side wins (in progress-commit's fetch + rebase, %B is the local commit
being replayed, i.e. the newer write). Tags and notes are unions. An entry removed on one side and
untouched on the other stays removed (remove, compact); otherwise it is kept.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import atomic_write_json, parse_json, read_text
from nanecho_core.index import recompute
from nanecho_core.store import empty_index

DRIVER_NAME = "nanecho-metadata"
DRIVER_COMMAND = "meta-update merge-driver %O %A %B"
_UNION_FIELDS = ("tags", "notes")


def _read_side(path: str | os.PathLike[str], *, base: bool) -> dict[str, Any] | None:
    target = Path(path)
    text = read_text(target, kind="JSON file") if target.exists() else ""
    if not text.strip():
        if base:
            return None  # added on both sides: no common ancestor
        raise NanechoError("empty metadata document", target)
    return dict(fastschema.validate(parse_json(text, target), "metadata", target))


def _merge_value(base: Any, ours: Any, theirs: Any) -> Any:
    if ours == theirs:
        return ours
    if base is not None and ours == base:
        return theirs
    if base is not None and theirs == base:
        return ours
    if isinstance(ours, dict) and isinstance(theirs, dict):
        keys = sorted(set(ours) | set(theirs))
        base_d = base if isinstance(base, dict) else {}
        return {k: _merge_value(base_d.get(k), ours.get(k), theirs.get(k)) for k in keys}
    return theirs


def _merge_entry(base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ours:
        if key in _UNION_FIELDS:
            out[key] = list(ours[key]) + [x for x in theirs[key] if x not in ours[key]]
        else:
            out[key] = _merge_value(None if base is None else base.get(key), ours[key], theirs[key])
    return out


def merge_documents(
    base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any]
) -> dict[str, Any]:
    base_doc = base or empty_index(ours["run"])
    base_by = {e["id"]: e for e in base_doc["checkpoints"]}
    ours_by = {e["id"]: e for e in ours["checkpoints"]}
    theirs_by = {e["id"]: e for e in theirs["checkpoints"]}
    merged: list[dict[str, Any]] = []
    for cid in sorted(set(ours_by) | set(theirs_by)):
        a, b, o = ours_by.get(cid), theirs_by.get(cid), base_by.get(cid)
        if a is not None and b is not None:
            merged.append(_merge_entry(o, a, b))
        elif o is None or (a if a is not None else b) != o:
            merged.append(a if a is not None else b)  # type: ignore[arg-type]
        # else: removed on one side, unchanged on the other: stays removed
    doc = {
        "schema_version": ours["schema_version"],
        "run": ours["run"],
        "quality": _merge_value(base_doc["quality"], ours["quality"], theirs["quality"]),
        "best_id": None,
        "latest_id": None,
        "checkpoints": merged,
    }
    rows = {r["session_id"]: r for r in ours.get("aggregates", [])}
    rows.update({r["session_id"]: r for r in theirs.get("aggregates", [])})
    if rows:
        doc["aggregates"] = sorted(rows.values(), key=lambda r: (r["first_created_at"], r["session_id"]))
    return fastschema.validate(recompute(doc), "metadata", "merged metadata.json")


def merge_files(base: str, ours: str, theirs: str) -> dict[str, Any]:
    """git's driver contract: read %O %A %B, write the result to %A. Errors leave %A untouched."""
    ours_doc, theirs_doc = _read_side(ours, base=False), _read_side(theirs, base=False)
    assert ours_doc is not None and theirs_doc is not None  # only the base may be absent
    doc = merge_documents(_read_side(base, base=True), ours_doc, theirs_doc)
    atomic_write_json(ours, doc)
    return doc


def install_merge_driver(repo: str | os.PathLike[str], command: str = DRIVER_COMMAND) -> None:
    """Register the `nanecho-metadata` driver in the repository's local git config."""
    settings = {
        f"merge.{DRIVER_NAME}.name": "NanEcho metadata index: union by checkpoint id",
        f"merge.{DRIVER_NAME}.driver": command,
    }
    for key, value in settings.items():
        result = subprocess.run(
            ["git", "-C", os.fspath(repo), "config", "--local", key, value],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise NanechoError(f"git config failed: {result.stderr.strip()}", repo)

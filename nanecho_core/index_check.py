"""`meta-update validate`: every problem of a run's index, listed (schema, files, hashes, lineage, best/latest)."""

from __future__ import annotations

import copy
from typing import Any

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import parse_json, sha256_file
from nanecho_core.index import recompute
from nanecho_core.store import RunPaths, read_metadata_bytes, read_sessions


def run_problems(paths: RunPaths, *, check_hashes: bool = True) -> tuple[list[str], int]:
    """(problems, number of entries checked). An empty list means the run is consistent."""
    data = read_metadata_bytes(paths)
    if data is None:
        raise NanechoError("metadata index not found", paths.metadata)
    try:
        doc = parse_json(data.decode("utf-8"), paths.metadata)
    except UnicodeDecodeError as exc:
        raise NanechoError("not UTF-8 text", paths.metadata) from exc
    if not fastschema.is_valid(doc, "metadata"):
        from nanecho_core import schema  # precise messages, only when something is wrong

        return [f"schema {p}" for p in schema.problems(doc, "metadata")], 0
    problems: list[str] = []
    entries = doc["checkpoints"]
    by_id: dict[str, dict[str, Any]] = {}
    for n, entry in enumerate(entries):
        where = f"$.checkpoints[{n}] {entry['id']}"
        if entry["id"] in by_id:
            problems.append(f"{where}: duplicate id")
        by_id[entry["id"]] = entry
        try:
            path = paths.checkpoint_file(entry["file"])
        except NanechoError as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        if entry["status"] != "ok":
            continue
        if not path.is_file():
            problems.append(f"{where}: status ok but file {entry['file']} is missing (run mark-missing)")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{where}: file has {size} bytes, index says {entry['bytes']}")
        elif check_hashes and sha256_file(path) != entry["sha256"]:
            problems.append(f"{where}: sha256 of {entry['file']} does not match the index (corrupt)")
    problems += _lineage_problems(doc, by_id)
    expected = recompute(copy.deepcopy(doc))
    for key in ("best_id", "latest_id"):
        if doc[key] != expected[key]:
            problems.append(f"$.{key}: is {doc[key]!r}, recomputing gives {expected[key]!r} (run rescore)")
    try:
        read_sessions(paths)
    except NanechoError as exc:
        problems.append(str(exc).removeprefix("Error: "))
    return problems, len(entries)


def _lineage_problems(doc: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    folded = {row["session_id"] for row in doc.get("aggregates", [])}
    for entry in doc["checkpoints"]:
        parent_id = entry["parent_id"]
        if parent_id is None:
            continue
        parent = by_id.get(parent_id)
        if parent is None:
            if not any(parent_id.startswith(f"ckpt-{s}-") for s in folded):
                problems.append(f"{entry['id']}: parent {parent_id} is not in the index")
            continue
        if parent["iteration"] > entry["iteration"]:
            problems.append(
                f"{entry['id']}: parent {parent_id} is at iteration {parent['iteration']}, "
                f"after its child's {entry['iteration']}"
            )
    done: set[str] = set()  # ids whose ancestor chain is known to end without a cycle
    for start in by_id:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        while node in by_id and node not in done:
            if node in on_path:
                problems.append(f"{start}: lineage cycle through {node}")
                break
            path.append(node)
            on_path.add(node)
            node = by_id[node]["parent_id"]
        done.update(path)
    return problems

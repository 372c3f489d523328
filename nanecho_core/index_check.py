"""`meta-update validate`: every problem of a run's index, listed (schema, files, hashes, lineage, best/latest)."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import is_blank, parse_json, read_bytes, sha256_file
from nanecho_core.index import pick_best, pick_latest
from nanecho_core.store import RunPaths, is_verified, read_metadata


def run_problems(
    paths: RunPaths, *, check_hashes: bool = True, check_files: bool = True
) -> tuple[list[str], int]:
    """(problems, number of entries checked). An empty list means the run is consistent.

    `check_files=False` checks the committed metadata alone (schema, containment, lineage,
    best/latest, sessions): what a fresh clone, whose weights live in the cache, can check.
    """
    found = read_metadata(paths)
    if found is None:
        raise NanechoError("metadata index not found", paths.metadata)
    data, file_info = found
    try:
        doc = parse_json(data.decode("utf-8"), paths.metadata)
    except UnicodeDecodeError as exc:
        raise NanechoError("not UTF-8 text", paths.metadata) from exc
    if not is_verified(paths, data, file_info) and not fastschema.is_valid(doc, "metadata"):
        from nanecho_core import schema  # precise messages, only when something is wrong

        return [f"schema {p}" for p in schema.problems(doc, "metadata")], 0
    problems: list[str] = []
    entries = doc["checkpoints"]
    by_id: dict[str, dict[str, Any]] = {}
    # os.* rather than pathlib: 10,000 entries must validate in well under 2 s.
    run_dir = os.fspath(paths.dir)
    base = os.path.realpath(run_dir)
    resolved_dirs: dict[str, str] = {}
    for n, entry in enumerate(entries):
        where = f"$.checkpoints[{n}] {entry['id']}"
        if entry["id"] in by_id:
            problems.append(f"{where}: duplicate id")
        by_id[entry["id"]] = entry
        full = os.path.join(run_dir, entry["file"])
        info = _lstat(full)
        if not _inside(base, full, info, resolved_dirs):
            problems.append(
                f"{where}: checkpoint file {entry['file']!r} resolves outside {paths.dir} (symlink?)"
            )
            continue
        if entry["status"] != "ok" or not check_files:
            continue
        if info is not None and stat.S_ISLNK(info.st_mode):
            info = _stat(full)
        if info is None or not stat.S_ISREG(info.st_mode):
            problems.append(f"{where}: status ok but file {entry['file']} is missing (run mark-missing)")
            continue
        if info.st_size != entry["bytes"]:
            problems.append(f"{where}: file has {info.st_size} bytes, index says {entry['bytes']}")
        elif check_hashes and sha256_file(full) != entry["sha256"]:
            problems.append(f"{where}: sha256 of {entry['file']} does not match the index (corrupt)")
    problems += _lineage_problems(doc, by_id)
    latest = pick_latest(entries)
    quality = doc["quality"]
    best = pick_best(
        entries, quality["metric"], quality["mode"], latest["eval_fingerprint"] if latest else None
    )
    expected = {"best_id": best["id"] if best else None, "latest_id": latest["id"] if latest else None}
    for key in ("best_id", "latest_id"):
        if doc[key] != expected[key]:
            problems.append(f"$.{key}: is {doc[key]!r}, recomputing gives {expected[key]!r} (run rescore)")
    problems += _sessions_problems(paths)
    return problems, len(entries)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _inside(base: str, full: str, info: os.stat_result | None, resolved_dirs: dict[str, str]) -> bool:
    """Containment with one realpath() per directory (plus one per symlinked file), not per file."""
    parent, name = os.path.split(full)
    if parent not in resolved_dirs:
        resolved_dirs[parent] = os.path.realpath(parent)
    is_link = info is not None and stat.S_ISLNK(info.st_mode)
    real = os.path.realpath(full) if is_link else os.path.join(resolved_dirs[parent], name)
    return real == base or real.startswith(base + os.sep)


def _sessions_problems(paths: RunPaths) -> list[str]:
    """Every line of sessions.jsonl must be JSON (the session schema is summarize's concern)."""
    try:
        lines = read_bytes(paths.sessions).split(b"\n")
    except FileNotFoundError:
        return []
    except OSError as exc:  # a directory, a symlink loop
        return [f"{paths.sessions}: cannot read: {exc.strerror or exc}"]
    last = max((i for i, line in enumerate(lines) if not is_blank(line)), default=-1)
    problems = []
    for number, line in enumerate(lines):
        if is_blank(line):
            continue
        try:
            json.loads(line)
        except ValueError:
            if number != last:  # a torn tail line is tolerated (an interrupted append)
                problems.append(f"{paths.sessions}:{number + 1}: not valid JSON")
    return problems


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

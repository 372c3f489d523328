"""Which checkpoint a session resumes from, why every other candidate was rejected, and the
regression guard that refuses to silently restart from scratch (docs/metadata.md#selection).
"""

from __future__ import annotations

import logging
import os
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, NamedTuple

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import dumps_canonical, is_utf8, parse_json, read_bytes, safe_join, sha256_file
from nanecho_core.index import (
    SUSPECT_PREFIX,
    check_metric_known,
    latest_key,
    lineage,
    metric_of,
    progress_key,
    time_key,
)
from nanecho_core.store import RunPaths, load_metadata

log = logging.getLogger(__name__)

SELECTION_VERSION = 1
# Regression guard. "Much better": the index recorded a metric more than 5 % (relative) better
# than the chosen checkpoint's. "Much later": it recorded an iteration more than
# max(1000, 25 % of that iteration) beyond the chosen one (fresh counts as iteration 0).
BETTER_TOLERANCE = 0.05
LATER_MIN_ITERS = 1000
LATER_FRACTION = 0.25
TIER_ORDER = {"cache": 0, "artifact": 1}
NOT_MEASURED = "no metric measured"  # a marker; the rejection names the metric


class Candidate(NamedTuple):  # a NamedTuple: 10,000 of them are built per selection
    entry: dict[str, Any]
    tier: str  # "cache" or "artifact"
    base: Path  # the directory the file must stay inside (run dir or artifact dir)
    rel: str  # the file, relative to base
    origin: str  # "index", "sidecar" or "artifact"

    @property
    def path(self) -> Path:
        return self.base / self.rel

    @property
    def key(self) -> tuple[str, str]:
        return (self.entry["id"], self.tier)


def select_checkpoint(
    paths: RunPaths,
    *,
    model_fingerprint: str,
    metric: str = "val_loss",
    mode: str = "min",
    artifact_dir: Path | None = None,
    allow_fresh: bool = False,
) -> dict[str, Any]:
    """The selection document (schema `selection`); raises NanechoError on an unallowed regression."""
    index = load_metadata(paths)
    rejected: list[dict[str, str]] = []
    candidates = _cache_candidates(paths, index, rejected)
    if artifact_dir is not None:
        candidates += _artifact_candidates(artifact_dir, rejected)
    check_metric_known([*index["checkpoints"], *(c.entry for c in candidates)], metric)

    compatible, unmeasured = [], []
    for cand in candidates:
        reason = _incompatibility(cand.entry, model_fingerprint, metric)
        if reason == NOT_MEASURED:  # cannot be ranked, but may be the head of the best's lineage
            unmeasured.append(cand)
        elif reason:
            rejected.append(_reject(cand, reason))
        else:
            compatible.append(cand)
    newest = max(compatible, key=lambda c: time_key(c.entry["created_at"]), default=None)
    eval_fp = newest.entry["eval_fingerprint"] if newest else None
    comparable = []
    for cand in compatible:
        if cand.entry["eval_fingerprint"] != eval_fp:
            other = cand.entry["eval_fingerprint"][:12]
            rejected.append(
                _reject(
                    cand,
                    f"eval set {other} differs from the newest eval set {str(eval_fp)[:12]}: not comparable",
                )
            )
        else:
            comparable.append(cand)

    sign = 1.0 if mode == "min" else -1.0
    # Stable sorts, least significant key first: tier, then later checkpoints first, then the metric.
    comparable.sort(key=lambda c: TIER_ORDER[c.tier])
    comparable.sort(key=lambda c: latest_key(c.entry), reverse=True)
    comparable.sort(key=lambda c: sign * c.entry["metrics"][metric])  # non-null: filtered above
    tried: set[tuple[str, str]] = set()  # (id, tier) of candidates already decided
    best = _first_verified(comparable, rejected, tried)
    chosen = _lineage_head(best, candidates, index, rejected, tried) if best else None
    if best is not None and chosen is not None and chosen is not best:
        rejected.append(_reject(best, f"not needed: best, continued by its descendant {chosen.entry['id']}"))
    for cand in (c for c in comparable if c.key not in tried):
        rejected.append(_reject(cand, _not_needed(cand, best, chosen)))
    rejected.extend(_reject(c, f"no {metric} measured") for c in unmeasured if c.key not in tried)

    regression, detail = _regression(index, best, chosen, model_fingerprint, metric, mode, eval_fp)
    if regression and not allow_fresh:
        raise NanechoError(
            f"refusing to resume: {detail}; restore the cache or artifact, or pass --allow-fresh"
        )
    doc: dict[str, Any] = {
        "schema_version": SELECTION_VERSION,
        "run": paths.name,
        "source": chosen.tier if chosen else "fresh",
        "chosen": chosen.entry if chosen else None,
        "resume_path": os.fspath(chosen.path) if chosen else None,
        "reason": _reason(best, chosen, metric, index, candidates, artifact_dir),
        "rejected": rejected,
        "regression": regression,
        "regression_detail": detail,
        "allow_fresh": allow_fresh,
        "metric": metric,
        "mode": mode,
        "eval_fingerprint": eval_fp,
        "model_fingerprint": model_fingerprint,
    }
    # `rejected` items are built only by _reject-shaped literals above (three strings); checking
    # 10,000 of them against the schema costs more than the whole selection, so one stands in.
    fastschema.validate({**doc, "rejected": rejected[:1]}, "selection", "selection.json")
    return doc


def selection_json(doc: dict[str, Any]) -> str:
    """Byte-identical to dumps_canonical(doc), with the long `rejected` list encoded in C."""
    text = dumps_canonical({**doc, "rejected": []})
    if not doc["rejected"]:
        return text
    enc = encode_basestring  # what json.dumps(ensure_ascii=False) uses for a str, minus the overhead
    block = ",\n".join(
        f'    {{\n      "id": {enc(r["id"])},\n      "reason": {enc(r["reason"])},\n      "tier": {enc(r["tier"])}\n    }}'
        for r in doc["rejected"]
    )
    return text.replace('\n  "rejected": [],\n', '\n  "rejected": [\n' + block + "\n  ],\n", 1)


def _reject(cand: Candidate, reason: str) -> dict[str, str]:
    return {"id": cand.entry["id"], "tier": cand.tier, "reason": reason}


def _incompatibility(entry: dict[str, Any], model_fp: str, metric: str) -> str | None:
    if entry["model_fingerprint"] != model_fp:
        return f"model fingerprint {entry['model_fingerprint'][:12]} != requested {model_fp[:12]} (architecture differs)"
    suspect = [t for t in entry["tags"] if t.startswith(SUSPECT_PREFIX)]
    if suspect:
        return f"flagged {', '.join(suspect)}"
    if metric_of(entry, metric) is None:
        return NOT_MEASURED
    return None


def _verify(cand: Candidate) -> str | None:
    """Existence, size, then a streamed sha256: only ever run on the candidate about to be chosen."""
    safe_join(cand.base, cand.rel, what="checkpoint file")
    try:
        size = cand.path.stat().st_size
    except FileNotFoundError:
        return f"file not found: {cand.path}"
    except OSError as exc:
        return f"cannot read {cand.path}: {exc.strerror or exc}"
    if not cand.path.is_file():
        return f"not a regular file: {cand.path}"
    if size != cand.entry["bytes"]:
        return f"size {size} != recorded {cand.entry['bytes']} bytes (truncated or replaced)"
    digest = sha256_file(cand.path)
    if digest != cand.entry["sha256"]:
        return f"sha256 mismatch: file {digest[:12]} != recorded {cand.entry['sha256'][:12]} (corrupt)"
    return None


def _cache_candidates(
    paths: RunPaths, index: dict[str, Any], rejected: list[dict[str, str]]
) -> list[Candidate]:
    out: list[Candidate] = []
    known: set[str] = set()
    for entry in index["checkpoints"]:
        known.add(entry["id"])
        if entry["status"] != "ok":
            rejected.append({"id": entry["id"], "tier": "index", "reason": f"status {entry['status']}"})
            continue
        # Resolved (symlink check included) only when verified: 10,000 resolve() calls cost seconds.
        out.append(Candidate(entry, "cache", paths.dir, entry["file"], "index"))
    ckpt_dir = paths.checkpoints_dir
    if ckpt_dir.is_dir():
        names = sorted(
            n for n in os.listdir(ckpt_dir) if n.endswith(".json") and n[: -len(".json")] not in known
        )
        for name in names:
            sidecar = ckpt_dir / name
            if not is_utf8(name):
                rejected.append({"id": _shown(name), "tier": "cache", "reason": "file name is not UTF-8"})
                continue
            entry, problem = _read_sidecar(sidecar)
            if entry is None:
                rejected.append({"id": sidecar.stem, "tier": "cache", "reason": str(problem)})
                continue
            out.append(Candidate(entry, "cache", paths.dir, entry["file"], "sidecar"))
    return out


def _artifact_candidates(artifact_dir: Path, rejected: list[dict[str, str]]) -> list[Candidate]:
    if not artifact_dir.is_dir():
        if artifact_dir.exists():  # missing is normal (nothing was downloaded); a file is a mistake
            raise NanechoError("--artifact-dir is not a directory", artifact_dir)
        log.info("artifact directory %s does not exist: no artifact tier", artifact_dir)
        return []
    entries: dict[str, dict[str, Any]] = {}
    for doc_path in sorted(artifact_dir.glob("*.json")):
        if not is_utf8(doc_path.name):
            rejected.append(
                {"id": _shown(doc_path.name), "tier": "artifact", "reason": "file name is not UTF-8"}
            )
            continue
        if doc_path.name == "step.json":
            try:
                step = parse_json(doc_path.read_text(encoding="utf-8"), doc_path)
            except (NanechoError, OSError, UnicodeDecodeError) as exc:
                rejected.append(
                    {"id": "step.json", "tier": "artifact", "reason": f"unreadable step.json: {exc}"}
                )
                continue
            for item in step.get("checkpoints", []) if isinstance(step, dict) else []:
                if fastschema.is_valid(item, "metadata", "checkpoint"):
                    entries.setdefault(item["id"], item)
            continue
        entry, problem = _read_sidecar(doc_path)
        if entry is None:
            rejected.append({"id": doc_path.stem, "tier": "artifact", "reason": str(problem)})
        else:
            entries[entry["id"]] = entry
    # Artifacts are flat: the weights sit beside their sidecar, whatever the run-relative `file` was.
    return [
        Candidate(e, "artifact", artifact_dir, Path(e["file"]).name, "artifact") for e in entries.values()
    ]


def _shown(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _read_sidecar(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        doc = parse_json(read_bytes(path).decode("utf-8"), path)
    except (NanechoError, OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable sidecar {path.name}: {exc}"
    if not fastschema.is_valid(doc, "metadata", "checkpoint"):
        return None, f"sidecar {path.name} does not match the checkpoint schema"
    if doc["id"] != path.stem:
        return None, f"sidecar {path.name} describes {doc['id']}"
    return dict(doc), None


def _first_verified(
    ranked: list[Candidate], rejected: list[dict[str, str]], tried: set[tuple[str, str]]
) -> Candidate | None:
    """The best candidate whose file verifies; the ones that fail are rejected with the reason."""
    for cand in ranked:
        tried.add(cand.key)
        problem = _verify(cand)
        if not problem:
            return cand
        rejected.append(_reject(cand, problem))
    return None


def _lineage_head(
    best: Candidate,
    candidates: list[Candidate],
    index: dict[str, Any],
    rejected: list[dict[str, str]],
    tried: set[tuple[str, str]],
) -> Candidate:
    """The most trained verified checkpoint of `best`'s lineage (index.lineage), else `best`.

    Training goes on from where the best lineage got to: resuming the best checkpoint itself
    once val loss has stopped improving would replay the same iterations (resume is exact) in
    every later session, forever. `best` still picks the lineage, so a worse restart elsewhere
    is never continued.
    """
    ids = {e["id"] for e in lineage(best.entry, [*index["checkpoints"], *(c.entry for c in candidates)])}
    descendants = [
        c
        for c in candidates
        if c.key not in tried
        and c.entry["id"] in ids
        and not any(t.startswith(SUSPECT_PREFIX) for t in c.entry["tags"])
    ]
    descendants.sort(key=lambda c: TIER_ORDER[c.tier])
    descendants.sort(key=lambda c: progress_key(c.entry), reverse=True)  # most trained first
    return _first_verified(descendants, rejected, tried) or best


def _not_needed(cand: Candidate, best: Candidate | None, chosen: Candidate | None) -> str:
    assert best is not None and chosen is not None  # every candidate was tried when nothing verified
    for decided in (chosen, best):
        if cand.entry["id"] == decided.entry["id"]:
            return f"not needed: same checkpoint, other tier {decided.entry['id']}"
    return f"not needed: ranked below {best.entry['id']}"


def _regression(
    index: dict[str, Any],
    best: Candidate | None,
    chosen: Candidate | None,
    model_fp: str,
    metric: str,
    mode: str,
    eval_fp: str | None,
) -> tuple[bool, str | None]:
    """Compare what the index ever recorded (any status) with what is being resumed.

    Quality is judged on `best` (the best verified checkpoint), progress on `chosen` (the head of
    its lineage, which may have a worse val loss after overfitting, but is never behind it).
    """
    known = [
        e
        for e in index["checkpoints"]
        if e["model_fingerprint"] == model_fp
        and not (e["tags"] and any(t.startswith(SUSPECT_PREFIX) for t in e["tags"]))
    ]
    if not known:
        return False, None
    have_iter = chosen.entry["iteration"] if chosen else 0
    have_metric = metric_of(best.entry, metric) if best else None
    what = (
        f"{best.entry['id']} ({metric} {have_metric:.4g}, iteration {best.entry['iteration']})"
        if best
        else "a fresh start"
    )
    if chosen is not None and chosen is not best:
        what += f", continued by {chosen.entry['id']} (iteration {have_iter})"
    same_eval = [
        e
        for e in known
        if e["metrics"].get(metric) is not None and (eval_fp is None or e["eval_fingerprint"] == eval_fp)
    ]
    if same_eval:
        sign = 1.0 if mode == "min" else -1.0
        top = min(same_eval, key=lambda e: sign * e["metrics"][metric])
        best_metric = metric_of(top, metric) or 0.0
        worse = have_metric is None or (
            have_metric > best_metric * (1 + BETTER_TOLERANCE)
            if mode == "min"
            else have_metric < best_metric * (1 - BETTER_TOLERANCE)
        )
        if worse:
            return True, (
                f"the index knows {top['id']} ({metric} {best_metric:.4g}, iteration {top['iteration']}, "
                f"status {top['status']}) but the best available is {what}"
            )
    latest = max(known, key=lambda e: e["iteration"])
    lost = latest["iteration"] - have_iter
    if lost > max(LATER_MIN_ITERS, LATER_FRACTION * latest["iteration"]):
        return True, (
            f"the index knows {latest['id']} at iteration {latest['iteration']} (status {latest['status']}) "
            f"but the best available is {what}: {lost} iterations would be lost"
        )
    return False, None


def _reason(
    best: Candidate | None,
    chosen: Candidate | None,
    metric: str,
    index: dict[str, Any],
    candidates: list[Candidate],
    artifact_dir: Path | None,
) -> str:
    if best is not None and chosen is not None:
        value = metric_of(best.entry, metric)
        text = (
            f"best verified {metric} {value:.4g} at iteration {best.entry['iteration']} "
            f"({best.tier} tier, from {best.origin})"
        )
        if chosen is not best:
            text += (
                f"; resuming its newest verified descendant at iteration {chosen.entry['iteration']} "
                f"({chosen.tier} tier, from {chosen.origin}) so training continues instead of replaying"
            )
        return text
    parts = ["index empty" if not index["checkpoints"] else "no usable checkpoint in the index"]
    if artifact_dir is None:
        parts.append("no artifact directory given")
    elif not artifact_dir.is_dir():
        parts.append(f"no artifact (directory {artifact_dir} missing)")
    elif not any(c.tier == "artifact" for c in candidates):
        parts.append("no artifact checkpoint")
    else:
        parts.append("no usable artifact checkpoint")
    return "fresh start: " + ", ".join(parts)

"""Bring older documents to the current index: the echoself legacy format, and schema_version 1.

Legacy (tests/fixtures/metadata.json): an object keyed by checkpoint_id. Its known failures are
corrected, never carried over silently:
- quality_score grew with the iteration number: dropped as a ranking; quality is val_loss (min).
- forced saves recorded train_loss 0.0: becomes null, with a note.
- eval text was the training text: a held-out loss below 0.1 nats is flagged `suspect:eval-is-train`.
- train losses far above ln(vocab) are not per-token means: tagged `flag:train-loss-not-per-token`
  (val_loss, the quality metric, is unaffected, so the entry still ranks).
- resets and zero-step resumes: flagged `suspect:progress-reset` / `suspect:zero-progress-resume`.
Every legacy record is kept verbatim in a `legacy record:` note, so the import is lossless.
Weights, hashes and data fingerprints were never recorded: sha256 and fingerprints are the
all-zero UNKNOWN value and status is `missing` (selection never picks such an entry).
"""

from __future__ import annotations

import math
import re
from typing import Any

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fingerprints import MODEL_KEYS, model_fingerprint
from nanecho_core.fsio import dumps_line
from nanecho_core.index import recompute, time_key
from nanecho_core.store import METADATA_VERSION, empty_index

UNKNOWN = "0" * 64
LEGACY_ID = re.compile(r"^ckpt_(\d{8})_(\d{6})_(\d+)_([0-9a-f]+)(?:_[0-9a-f]+)?$")
RESUMED = re.compile(r"resumed from iteration (\d+)")
EVAL_IS_TRAIN_BELOW = 0.1


def _new_ids(key: str, record: dict[str, Any]) -> tuple[str, str]:
    match = LEGACY_ID.match(key)
    if match:
        session = f"{match.group(1)}T{match.group(2)}Z-{match.group(4)}"
    else:
        stamp = re.sub(r"[^0-9T]", "", record["created_at"])[:15]
        session = f"legacy-{stamp}"
    return session, f"ckpt-{session}-{record['iteration']:08d}"


def _timestamp(text: str) -> str:
    stamp = text.replace(" ", "T")
    if stamp.endswith("Z") or re.search(r"[+-]\d{2}:\d{2}$", stamp):
        return stamp.replace("+00:00", "Z")
    return stamp + "Z"


def convert_legacy(
    legacy: dict[str, Any], run: str, path: str = "legacy metadata"
) -> tuple[dict[str, Any], list[str]]:
    """The legacy document as a current index (validated) and a report line per correction."""
    fastschema.validate(legacy, "legacy_metadata", path)
    report: list[str] = []
    # JSON Schema counts 500.0 as an integer; the ids and the index want the int itself.
    legacy = {key: {**rec, "iteration": int(rec["iteration"])} for key, rec in legacy.items()}
    records = sorted(legacy.items(), key=lambda kv: time_key(_timestamp(kv[1]["created_at"])))
    new_id = {key: _new_ids(key, rec)[1] for key, rec in records}
    if len(set(new_id.values())) != len(new_id):
        raise NanechoError("legacy checkpoints map onto duplicate ids", path)
    entries: list[dict[str, Any]] = []
    max_iter_so_far = -1
    for key, rec in records:
        if rec["checkpoint_id"] != key:
            raise NanechoError(
                f"key names checkpoint {rec['checkpoint_id']!r}", path, f"$.{key}.checkpoint_id"
            )
        session, cid = _new_ids(key, rec)
        entry, flags = _convert_one(key, rec, session, cid)
        entry["parent_id"] = _parent(rec, entries, new_id)
        resumed = RESUMED.search(rec.get("notes") or "")
        if resumed and int(resumed.group(1)) >= rec["iteration"]:
            flags.append(
                (
                    "suspect:zero-progress-resume",
                    f"resumed at iteration {resumed.group(1)} and trained 0 steps",
                )
            )
        if not resumed and rec["iteration"] < max_iter_so_far:
            flags.append(
                (
                    "suspect:progress-reset",
                    f"restarted at iteration {rec['iteration']} after {max_iter_so_far}",
                )
            )
            max_iter_so_far = rec["iteration"]  # a new line of training starts here
        max_iter_so_far = max(max_iter_so_far, rec["iteration"])
        for tag, why in flags:
            entry["tags"].append(tag)
            entry["notes"].append(f"{tag}: {why}")
            report.append(f"{key}: flagged {tag} ({why})")
        entries.append(entry)
    doc = empty_index(run)
    doc["checkpoints"] = entries
    recompute(doc)
    fastschema.validate(doc, "metadata", "imported metadata")
    return doc, report


def _parent(rec: dict[str, Any], earlier: list[dict[str, Any]], new_id: dict[str, str]) -> str | None:
    if rec.get("parent_checkpoint") in new_id:
        return new_id[rec["parent_checkpoint"]]
    resumed = RESUMED.search(rec.get("notes") or "")
    if not resumed:
        return None
    wanted = int(resumed.group(1))
    matches = [e for e in earlier if e["iteration"] == wanted]
    return matches[-1]["id"] if matches else None


def _convert_one(key: str, rec: dict[str, Any], session: str, cid: str) -> tuple[dict[str, Any], list[Any]]:
    config = rec.get("model_config") or {}
    model = {k: config[k] for k in MODEL_KEYS if k in config}
    vocab = int(model.get("vocab_size", 0)) or 1
    notes = [f"imported from legacy {key}", "legacy record: " + dumps_line(rec)]
    if rec.get("notes"):
        notes.append(str(rec["notes"]))
    notes.append(
        f"legacy quality_score {rec.get('quality_score')} ignored: it grew with the iteration number"
    )
    flags: list[tuple[str, str]] = []
    train_loss = rec.get("train_loss")
    if train_loss is not None and train_loss <= 0:
        notes.append(f"legacy train_loss {train_loss} was a placeholder (forced save): recorded as null")
        train_loss = None
    val_loss = rec.get("val_loss")
    if val_loss is not None and val_loss <= 0:
        notes.append(f"legacy val_loss {val_loss} was a placeholder: recorded as null")
        val_loss = None
    if val_loss is not None and val_loss < EVAL_IS_TRAIN_BELOW:
        flags.append(("suspect:eval-is-train", f"val_loss {val_loss:.3g} is implausible on held-out text"))
    if train_loss is not None and train_loss > 2 * math.log(vocab):
        flags.append(
            ("flag:train-loss-not-per-token", f"train_loss {train_loss:.4g} exceeds 2 ln(vocab {vocab})")
        )
    metrics_in = rec.get("metrics") or {}
    extras = {f"legacy_{k}": v for k, v in metrics_in.items() if k != "val_loss" and _is_num(v)}
    if _is_num(rec.get("epoch")):
        extras["legacy_epoch"] = rec["epoch"]
    tokens: Any = metrics_in.get("tokens_processed")
    entry = {
        "id": cid,
        "file": f"cache/checkpoints/{cid}.pt",
        "sha256": UNKNOWN,
        "bytes": round(float(rec.get("file_size_mb") or 0) * 2**20),
        "iteration": rec["iteration"],
        "tokens_seen": int(tokens) if _is_num(tokens) and tokens >= 0 else 0,
        "created_at": _timestamp(rec["created_at"]),
        "session_id": session,
        "parent_id": None,
        "metrics": {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_bpb": None,
            "lr": rec.get("learning_rate"),
            **extras,
        },
        "model": model,
        "model_fingerprint": model_fingerprint(model),
        "tokenizer": {"name": "gpt2" if vocab == 50257 else "unknown", "vocab_size": vocab},
        "data_fingerprint": UNKNOWN,
        "eval_fingerprint": UNKNOWN,
        "storage": {"cache_key": None, "artifact_name": None, "present_locally": False},
        "status": "missing",
        "tags": [
            "legacy",
            *[t for t in rec.get("tags", []) if re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", t)],
        ],
        "notes": notes,
    }
    return entry, flags


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- schema_version migration -----------------------------------------------------------------
# v1, the previous shape (docs/metadata.md): {"schema_version": 1, "run", "best_checkpoint",
# "latest_checkpoint", "checkpoints": [...]} with entries carrying flat `train_loss`/`val_loss`,
# `present` (bool) instead of status/storage, a single `notes` string, and no model fingerprint,
# tokenizer or quality block.
V1_ENTRY_KEYS = (
    "id", "file", "sha256", "bytes", "iteration", "tokens_seen", "created_at", "session_id", "parent_id",
    "train_loss", "val_loss", "model", "data_fingerprint", "eval_fingerprint", "present", "tags", "notes",
)  # fmt: skip


def migrate(doc: Any, path: str = "metadata.json") -> tuple[dict[str, Any], bool]:
    """(current document, whether anything changed); refuses unknown or newer versions."""
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise NanechoError("not a metadata document (no schema_version)", path, "$.schema_version")
    version = doc["schema_version"]
    if version == METADATA_VERSION:
        return dict(fastschema.validate(doc, "metadata", path)), False
    if version != 1:
        raise NanechoError(f"cannot migrate schema_version {version!r} (known: 1, {METADATA_VERSION})", path)
    for key in ("run", "checkpoints"):
        if key not in doc:
            raise NanechoError(f"v1 document lacks {key!r}", path, f"$.{key}")
    out = empty_index(doc["run"])
    for n, old in enumerate(doc["checkpoints"]):
        missing = [k for k in V1_ENTRY_KEYS if k not in old]
        if missing:
            raise NanechoError(f"v1 entry lacks {', '.join(missing)}", path, f"$.checkpoints[{n}]")
        model = old["model"]
        val = old["val_loss"]
        byte_level = model.get("vocab_size") == 256
        out["checkpoints"].append(
            {
                **{
                    k: old[k]
                    for k in V1_ENTRY_KEYS
                    if k not in ("train_loss", "val_loss", "present", "notes")
                },
                "metrics": {
                    "train_loss": old["train_loss"] or None,
                    "val_loss": val or None,
                    "val_bpb": val / math.log(2) if val and byte_level else None,
                },
                "model_fingerprint": model_fingerprint(model),
                "tokenizer": {
                    "name": "bytes" if byte_level else "unknown",
                    "vocab_size": model.get("vocab_size", 1),
                },
                "storage": {
                    "cache_key": None,
                    "artifact_name": None,
                    "present_locally": bool(old["present"]),
                },
                "status": "ok" if old["present"] else "missing",
                "notes": [old["notes"]] if old["notes"] else [],
            }
        )
    recompute(out)
    return dict(fastschema.validate(out, "metadata", path)), True

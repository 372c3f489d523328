"""The self-describing checkpoint: atomic, hashed-while-written save; verify-then-load.

A checkpoint is one dict (format "nanecho-checkpoint/1", see docs/contract.md) written with
torch.save through a stream that hashes every byte on its way to disk, then renamed into place;
its index entry is written beside it as `<id>.json` (the sidecar). Loading checks the sha256
before torch ever parses the bytes, and parses them with weights_only=True, so a tampered or
crafted file is refused, never executed.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import queue
import random
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanecho_core import schema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import atomic_write_json, fsync_dir, read_json

FORMAT = "nanecho-checkpoint/1"
REQUIRED_KEYS = (
    "format",
    "id",
    "model",
    "optimizer",
    "iteration",
    "tokens_seen",
    "config",
    "model_args",
    "fingerprints",
    "cursor",
    "rng",
)


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes bytes as they pass to the file (no second read).

    Hashing runs on a helper thread (hashlib releases the GIL on large buffers), overlapping
    torch's serialization and the file writes; chunks are hashed in order.
    """

    def __init__(self, handle: Any) -> None:
        super().__init__()
        self._handle = handle
        self._digest = hashlib.sha256()
        self._chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._hash_chunks, daemon=True)
        self._thread.start()
        self.size = 0

    def _hash_chunks(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._handle.write(view)
        self._chunks.put(bytes(view) if not isinstance(data, bytes) else data)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        self._handle.flush()

    def hexdigest(self) -> str:
        self._chunks.put(None)
        self._thread.join()
        return self._digest.hexdigest()

    def abandon(self) -> None:
        self._chunks.put(None)


def save_checkpoint(state: dict[str, Any], path: Path) -> tuple[str, int]:
    """Write `state` atomically to `path`; return (sha256 hex, bytes), hashed while writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            writer = _HashingWriter(handle)
            try:
                torch.save(state, writer)  # type: ignore[arg-type]  # a write-only stream suffices
            except BaseException:
                writer.abandon()
                raise
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise NanechoError(f"cannot write checkpoint: {exc.strerror or exc}", path) from exc
        raise
    fsync_dir(path.parent)
    return writer.hexdigest(), writer.size


def write_sidecar(entry: dict[str, Any], pt_path: Path) -> Path:
    """Write the checkpoint's index entry next to it as `<id>.json` (validated, atomic)."""
    sidecar = pt_path.with_suffix(".json")
    schema_validate_entry(entry, sidecar)
    atomic_write_json(sidecar, entry)
    return sidecar


def schema_validate_entry(entry: dict[str, Any], where: Path | str) -> None:
    """Validate one checkpoint entry against metadata#/$defs/checkpoint."""
    doc = {
        "schema_version": schema.current_version("metadata"),
        "run": "validation",
        "quality": {"metric": "val_loss", "mode": "min"},
        "best_id": None,
        "latest_id": None,
        "checkpoints": [entry],
    }
    try:
        schema.validate(doc, "metadata", where)
    except NanechoError as exc:
        json_path = (exc.json_path or "").replace("$.checkpoints[0]", "$", 1)
        raise NanechoError(exc.message, where, json_path or None) from None


def read_sidecar(pt_path: Path) -> dict[str, Any] | None:
    """The validated sidecar of a checkpoint file, or None when there is none."""
    sidecar = pt_path.with_suffix(".json")
    if not sidecar.exists():
        return None
    entry = read_json(sidecar)
    schema_validate_entry(entry, sidecar)
    return dict(entry)


def load_checkpoint(path: Path, expected_sha256: str | None) -> dict[str, Any]:
    """Verify the sha256 (when known), then parse with weights_only=True; any defect -> NanechoError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NanechoError("checkpoint file not found", path) from exc
    except IsADirectoryError as exc:
        raise NanechoError("checkpoint path is a directory", path) from exc
    except OSError as exc:
        raise NanechoError(f"cannot read checkpoint: {exc.strerror or exc}", path) from exc
    if not data:
        raise NanechoError("checkpoint file is empty (0 bytes)", path)
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise NanechoError(
                f"checkpoint sha256 mismatch (expected {expected_sha256[:12]}…, got {actual[:12]}…): "
                "the file is corrupt or was replaced",
                path,
            )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise NanechoError(
            f"checkpoint refused by the weights-only loader: {_unpickler_reason(exc)}", path
        ) from exc
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise NanechoError(f"checkpoint is not a readable torch file: {type(exc).__name__}", path) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise NanechoError(f"not a NanEcho checkpoint (expected format {FORMAT!r})", path)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise NanechoError(f"checkpoint lacks {', '.join(missing)}", path)
    return state


def _unpickler_reason(exc: Exception) -> str:
    """torch's own refusal reason, without its advice to retry with weights_only=False."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in rest.splitlines() if line.strip()]
        if lines:
            return lines[0].rstrip(".") + " (nothing was executed)"
    return "content other than tensors, numbers, strings and containers (nothing was executed)"


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step can touch, in a weights_only-safe form (tensors, ints, strings).

    The Mersenne Twister states are int64 tensors, not lists: 1,250 pickled ints would cost the
    pure-Python weights-only unpickler more time than all the weights.
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    rng: dict[str, Any] = {
        "python": [py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np.asarray(np_keys).astype(np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = rng["python"]
    random.setstate((int(py_version), tuple(int(x) for x in torch.as_tensor(py_state).tolist()), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = rng["numpy"]
    keys = np.asarray(torch.as_tensor(np_keys).numpy(), dtype=np.uint32)
    np.random.set_state((np_name, keys, np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])

"""The self-describing checkpoint: atomic, hashed-while-written save; verify-then-load.

A checkpoint is one dict (see docs/contract.md) written with torch.save, its tensors packed into
one byte blob (packing.py; format "nanecho-checkpoint/2", while "/1" files, one record per tensor,
still load), fsynced while its bytes are hashed from the page cache, then renamed into place;
its index entry is written beside it as `<id>.json` (the sidecar). Loading checks the sha256
before torch ever parses the bytes, and parses them with weights_only=True, so a tampered or
crafted file is refused, never executed; check_state then refuses fields train-step cannot use,
which an honest hash does not rule out.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap
import os
import pickle
import random
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanecho_core import fastschema, packing, schema
from nanecho_core.errors import NanechoError
from nanecho_core.fsio import atomic_write_json, fsync_dir, read_json

FORMAT = "nanecho-checkpoint/2"  # what save_checkpoint writes: {"format", "packed": packing.pack(...)}
UNPACKED_FORMAT = "nanecho-checkpoint/1"  # the same dict with one torch record per tensor
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
FINGERPRINTS_READ = ("model", "data", "eval")  # compared by train-step; newer files add "eval_split"
CONFIG_SECTIONS = ("model", "train", "data")
COUNTER_MAX = 2**53  # iteration and tokens_seen stay exact as JSON numbers (doubles)


def save_checkpoint(state: dict[str, Any], path: Path) -> tuple[str, int]:
    """Write `state` atomically to `path`; return (sha256 hex, bytes) of what reached the disk.

    The file holds {"format": FORMAT, "packed": <state, tensors packed>}; load_checkpoint returns
    the state (with "format": FORMAT). torch writes the temp file; then the fsync runs on a helper
    thread while this one hashes the written bytes (mapped from the page cache, not copied), so the
    hash costs nothing next to the fsync; only then is the file renamed into place.
    """
    on_disk = {"format": FORMAT, "packed": packing.pack({k: v for k, v in state.items() if k != "format"})}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise NanechoError(f"cannot write checkpoint: {exc.strerror or exc}", path) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            # A stream, not the temp path: torch would name the archive inside after the
            # (random) temp file, and identical states would not give identical bytes.
            with _without_zip_crc32():  # the sha256 covers every byte; CRC32 would be a second pass
                torch.save(on_disk, handle)
            handle.flush()
            sha, size = _fsync_and_hash(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise NanechoError(f"cannot write checkpoint: {exc.strerror or exc}", path) from exc
        raise
    fsync_dir(path.parent)
    return sha, size


@contextlib.contextmanager
def _without_zip_crc32() -> Iterator[None]:
    """torch.save without per-record CRC32 (torch.load does not need it; `unzip -t` would complain)."""
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(before)


def _fsync_and_hash(fd: int) -> tuple[str, int]:
    """fsync `fd` on a helper thread while hashing its bytes here (both release the GIL)."""
    failure: list[OSError] = []

    def sync() -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            failure.append(exc)

    syncer = threading.Thread(target=sync, daemon=True)
    syncer.start()
    try:
        size = os.fstat(fd).st_size
        sha = _mapped_sha256(fd, size)
    finally:
        syncer.join()
    if failure:
        raise failure[0]
    return sha, size


def _mapped_sha256(fd: int, size: int) -> str:
    """sha256 of the file's first `size` bytes, read through mmap (no copy into Python memory)."""
    digest = hashlib.sha256()
    if size:
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mapped:
            digest.update(mapped)
    return digest.hexdigest()


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
    """Verify the sha256 (when known), then parse with weights_only=True; any defect -> NanechoError.

    A verified file is parsed in place (torch's mmap loading: the page cache is the buffer, no
    copy); a file with no known hash is read into memory first and parsed from there.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115  # closed below, after parsing
    except FileNotFoundError as exc:
        raise NanechoError("checkpoint file not found", path) from exc
    except IsADirectoryError as exc:
        raise NanechoError("checkpoint path is a directory", path) from exc
    except OSError as exc:
        raise NanechoError(f"cannot read checkpoint: {exc.strerror or exc}", path) from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if not size:
            raise NanechoError("checkpoint file is empty (0 bytes)", path)
        if expected_sha256 is None:
            return _parse(io.BytesIO(handle.read()), path, mapped=False)
        actual = _mapped_sha256(handle.fileno(), size)
        if actual != expected_sha256:
            raise NanechoError(
                f"checkpoint sha256 mismatch (expected {expected_sha256[:12]}…, got {actual[:12]}…): "
                "the file is corrupt or was replaced",
                path,
            )
        # Parse the very file that was hashed, not whatever the name points to by now.
        same_file = f"/proc/self/fd/{handle.fileno()}"
        return _parse(same_file if os.path.exists(same_file) else str(path), path, mapped=True)


def _parse(source: str | io.BytesIO, path: Path, mapped: bool) -> dict[str, Any]:
    try:
        state = torch.load(source, map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as exc:
        raise NanechoError(
            f"checkpoint refused by the weights-only loader: {_unpickler_reason(exc)}", path
        ) from exc
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise NanechoError(
            f"checkpoint is truncated or not a torch checkpoint ({_first_sentence(exc)})", path
        ) from exc
    if isinstance(state, dict) and state.get("format") == FORMAT:
        try:
            state = {**packing.unpack(state.get("packed")), "format": FORMAT}
        except packing.PackError as exc:
            raise NanechoError(f"checkpoint is damaged: {exc}", path) from None
    elif not isinstance(state, dict) or state.get("format") != UNPACKED_FORMAT:
        raise NanechoError(
            f"not a NanEcho checkpoint (expected format {FORMAT!r} or {UNPACKED_FORMAT!r})", path
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise NanechoError(f"checkpoint lacks {', '.join(missing)}", path)
    return state


def _first_sentence(exc: Exception) -> str:
    """What went wrong, without the paragraphs of advice torch appends (or the type, when it says nothing)."""
    return str(exc).split(". ", 1)[0].strip() or type(exc).__name__


Check = Callable[[Any], bool]
Field = tuple[Any, Check, str]  # key, its check, and what it must be (for the error message)
_ABSENT = object()  # a key the checkpoint lacks: passes only the checks that allow it


def _optional(check: Check) -> Check:
    return lambda value: value is None or value is _ABSENT or check(value)


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _is_checkpoint_id(value: Any) -> bool:
    return fastschema.is_valid(value, "metadata", "checkpoint_id")


def _is_sha256(value: Any) -> bool:
    return fastschema.is_valid(value, "metadata", "sha256")


def _is_counter(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= COUNTER_MAX


def _is_finite(value: Any) -> bool:
    # Compared, not math.isfinite(): an int beyond float range would raise there (and in float()).
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def _is_loss(value: Any) -> bool:
    return _is_finite(value) and value > 0  # as metadata#/$defs/loss, which step.json must match


_COUNTER = "an integer in 0..2**53"  # COUNTER_MAX
_LOSS = "None or a finite number > 0"
STATE_FIELDS: tuple[Field, ...] = (
    ("id", _is_checkpoint_id, "a checkpoint id (ckpt-<session>-<8 digits>)"),
    ("parent_id", _optional(_is_checkpoint_id), "None or a checkpoint id"),
    ("iteration", _is_counter, _COUNTER),
    ("tokens_seen", _is_counter, _COUNTER),
    ("best_val_loss", _optional(_is_loss), _LOSS),
    ("last_val_loss", _optional(_is_loss), _LOSS),
    *((key, _is_dict, "a dict") for key in ("model", "optimizer", "cursor", "rng", "config", "fingerprints")),
    ("train_accumulator", _optional(_is_dict), "None or a dict"),
)
CONFIG_FIELDS: tuple[Field, ...] = tuple((key, _is_dict, "a dict") for key in CONFIG_SECTIONS)
ACCUMULATOR_FIELDS: tuple[Field, ...] = (
    ("loss_sum", lambda value: _is_finite(value) and value >= 0, "a finite number >= 0"),
    ("count", _is_counter, _COUNTER),
)


def check_state(state: dict[str, Any], path: Path) -> None:
    """Refuse a loaded checkpoint whose fields train-step cannot use, naming the first bad one.

    A sha256 proves only that these are the bytes that were saved: a hand-made or edited file can
    carry an honest one (or have no sidecar at all), and would then crash train-step, or train a
    whole session before failing to write step.json. The tensors inside model, optimizer, cursor
    and rng are checked by the code that loads them (Trainer.restore).
    """
    _check_fields(state, "$", STATE_FIELDS, path)
    _check_fields(state["config"], "$.config", CONFIG_FIELDS, path)
    keys = dict.fromkeys([*FINGERPRINTS_READ, *state["fingerprints"]])
    fingerprints = tuple((key, _is_sha256, "a sha256 hex string") for key in keys)
    _check_fields(state["fingerprints"], "$.fingerprints", fingerprints, path)
    if state.get("train_accumulator") is not None:
        _check_fields(state["train_accumulator"], "$.train_accumulator", ACCUMULATOR_FIELDS, path)
    # A file loaded without a known sha256 (--init-from, no sidecar) may carry flipped bits; a NaN
    # or inf weight would otherwise surface only as "val loss not finite" after the first eval.
    for name, tensor in state["model"].items():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not torch.isfinite(tensor).all()
        ):
            raise NanechoError(
                "checkpoint weight holds NaN or inf values: the file is corrupt or its run diverged",
                path,
                f"$.model[{json.dumps(str(name))}]",
            )


def _check_fields(node: dict[Any, Any], json_path: str, fields: tuple[Field, ...], path: Path) -> None:
    for key, check, what in fields:
        value = node.get(key, _ABSENT)
        if not check(value):
            raise NanechoError(f"expected {what}, got {_shown(value)}", path, f"{json_path}.{key}")


def _shown(value: Any) -> str:
    """A bad value as an error shows it: short scalars by repr, anything else by type (never tensor data)."""
    if value is _ABSENT:
        return "nothing"
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "…"
    return type(value).__name__


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

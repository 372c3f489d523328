"""Checkpoints: hashed while written, verified before parsing, never executing a payload."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from nanecho_core.checkpoint import FORMAT, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from nanecho_core.errors import NanechoError


def _state() -> dict:
    return {
        "format": FORMAT,
        "id": "ckpt-s-00000001",
        "model": {"w": torch.arange(1000, dtype=torch.float32).reshape(10, 100)},
        "optimizer": {"state": {}, "param_groups": []},
        "iteration": 1,
        "tokens_seen": 768,
        "config": {"model": {"n_layer": 1}},
        "model_args": {"n_layer": 1},
        "fingerprints": {"model": "m"},
        "cursor": {"generator": torch.Generator().manual_seed(3).get_state(), "batches_drawn": 1},
        "rng": capture_rng(),
    }


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, str, int]:
    path = tmp_path / "cache" / "checkpoints" / "c.pt"
    sha, size = save_checkpoint(_state(), path)
    return path, sha, size


def test_sha256_computed_while_writing_matches_the_file(saved: tuple[Path, str, int]) -> None:
    path, sha, size = saved
    data = path.read_bytes()
    assert sha == hashlib.sha256(data).hexdigest()
    assert size == len(data)
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temp file left behind


def test_round_trip_restores_tensors_and_rng_state(saved: tuple[Path, str, int]) -> None:
    path, sha, _ = saved
    state = load_checkpoint(path, sha)
    assert torch.equal(state["model"]["w"], _state()["model"]["w"])
    expected = torch.rand(3)
    restore_rng(state["rng"])
    restore_rng(state["rng"])
    torch.manual_seed(0)
    restore_rng(state["rng"])
    assert torch.rand(3).shape == expected.shape
    restore_rng(state["rng"])
    again = torch.rand(3)
    restore_rng(state["rng"])
    assert torch.equal(again, torch.rand(3))


def test_truncated_checkpoint_is_refused_naming_the_file(saved: tuple[Path, str, int]) -> None:
    path, sha, size = saved
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(NanechoError, match="sha256 mismatch") as info:
        load_checkpoint(path, sha)
    assert info.value.path == str(path)
    with pytest.raises(NanechoError, match="not a readable torch file"):
        load_checkpoint(path, None)  # even without a hash to compare against


def test_bit_flip_is_refused(saved: tuple[Path, str, int]) -> None:
    path, sha, size = saved
    data = bytearray(path.read_bytes())
    data[size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(NanechoError, match="sha256 mismatch"):
        load_checkpoint(path, sha)


def test_zero_length_and_missing_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(NanechoError, match="empty"):
        load_checkpoint(empty, hashlib.sha256(b"").hexdigest())
    with pytest.raises(NanechoError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt", None)


class _Payload:
    """Unpickling this would create a marker file (a stand-in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_pickled_payload_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = _state()
    state["model"] = {"w": _Payload(marker)}
    torch.save(state, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()  # the hash matches: only weights_only stands guard
    with pytest.raises(NanechoError, match="weights-only loader") as info:
        load_checkpoint(path, sha)
    assert not marker.exists()
    assert "Unsupported global" in str(info.value) and "weights_only=False" not in str(info.value)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(NanechoError):
        load_checkpoint(raw, None)
    assert not marker.exists()


def test_a_torch_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(NanechoError, match="not a NanEcho checkpoint"):
        load_checkpoint(path, None)


def test_rng_state_is_weights_only_safe(tmp_path: Path) -> None:
    path = tmp_path / "rng.pt"
    torch.save(capture_rng(), path)
    rng = torch.load(path, weights_only=True)
    assert rng["numpy"][1].shape == (624,) and rng["python"][1].shape == (625,)
    import random

    import numpy as np

    restore_rng(rng)
    first = (random.random(), np.random.rand())
    restore_rng(rng)
    assert (random.random(), np.random.rand()) == first

"""Checkpoints: hashed while written, verified before parsing, never executing a payload."""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import pytest
import torch

from nanecho_core.checkpoint import (
    FINGERPRINTS_READ,
    FORMAT,
    capture_rng,
    check_state,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
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
    with pytest.raises(NanechoError, match="checkpoint is truncated or not a torch checkpoint"):
        load_checkpoint(path, None)  # even without a hash to compare against


def test_field_check_accepts_checkpoints_that_predate_the_optional_fields(tmp_path: Path) -> None:
    # No parent_id, best/last_val_loss, train_accumulator or fingerprints.eval_split: older files
    # still load (the wrong-field refusals run through train-step: tests/cli/test_train_step_bad_checkpoints.py).
    state = _state() | {
        "config": {"model": {}, "train": {}, "data": {}},
        "fingerprints": dict.fromkeys(FINGERPRINTS_READ, "0" * 64),
    }
    check_state(state, tmp_path / "old.pt")


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


def _mixed_state() -> dict:
    """Every dtype the packer accepts, odd sizes (unaligned byte counts), 0-d and empty tensors."""
    state = _state()
    state["model"] = {
        "w": torch.randn(7, 13),
        "half": torch.randn(5).half(),
        "bf": torch.randn(3, 3).bfloat16(),
        "f64": torch.randn(2, dtype=torch.float64),
        "i64": torch.arange(9),
        "i32": torch.arange(5, dtype=torch.int32),
        "i16": torch.arange(3, dtype=torch.int16),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "mask": torch.tensor([True, False, True]),
        "step": torch.tensor(42.0),
        "empty": torch.zeros(0, 4),
        "strided": torch.arange(20.0).reshape(4, 5).t(),  # non-contiguous
    }
    state["optimizer"] = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}},
        "param_groups": [{"params": [0], "betas": (0.9, 0.99)}],
    }
    return state


def test_packed_round_trip_is_exact_for_every_dtype_and_shape(tmp_path: Path) -> None:
    state = _mixed_state()
    path = tmp_path / "mixed.pt"
    sha, _ = save_checkpoint(state, path)
    back = load_checkpoint(path, sha)
    assert back["format"] == FORMAT == "nanecho-checkpoint/2"
    for key, tensor in state["model"].items():
        got = back["model"][key]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape, key
        assert torch.equal(got, tensor), key
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(4))
    assert back["optimizer"]["param_groups"] == [{"params": [0], "betas": (0.9, 0.99)}]
    assert back["cursor"]["batches_drawn"] == 1 and back["iteration"] == 1
    generator = torch.Generator()
    generator.set_state(back["cursor"]["generator"])
    assert torch.equal(
        torch.rand(4, generator=generator), torch.rand(4, generator=torch.Generator().manual_seed(3))
    )


def test_packed_file_is_one_tensor_record_and_identical_states_give_identical_bytes(tmp_path: Path) -> None:
    import zipfile

    state = _mixed_state()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    sha_a, _ = save_checkpoint(state, a)
    sha_b, _ = save_checkpoint(_mixed_state() | {"model": state["model"], "rng": state["rng"]}, b)
    assert sha_a == sha_b  # padding is zeroed, not left as whatever memory held
    with zipfile.ZipFile(a) as archive:
        records = [n for n in archive.namelist() if "/data/" in n and not n.endswith(".pkl")]
    assert len(records) == 1, records
    raw = torch.load(a, weights_only=True)
    assert set(raw) == {"format", "packed"} and raw["packed"]["blob"].dtype == torch.uint8


def test_unpacked_format_1_checkpoints_still_load(tmp_path: Path) -> None:
    state = _state()
    state["format"] = "nanecho-checkpoint/1"
    path = tmp_path / "old.pt"
    torch.save(state, path)
    back = load_checkpoint(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert back["format"] == "nanecho-checkpoint/1"
    assert torch.equal(back["model"]["w"], state["model"]["w"])


def _nested(depth: int) -> list[object]:
    node: list[object] = []
    for _ in range(depth):
        node = [node]
    return node


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["tensors"][0].__setitem__(2, 1 << 40), "packed tensor 0 lies outside the blob"),
        (lambda p: p["tensors"][0].__setitem__(2, 3), "packed tensor 0 lies outside the blob"),
        (
            lambda p: p["tensors"][0].__setitem__(0, "torch.complex64"),
            "packed tensor 0 has a malformed manifest entry",
        ),
        (lambda p: p["tensors"][0].__setitem__(1, [-1]), "packed tensor 0 has a malformed manifest entry"),
        (lambda p: p["tensors"].__setitem__(0, "junk"), "packed tensor 0 has a malformed manifest entry"),
        (lambda p: p.__setitem__("blob", torch.zeros(8)), "packed blob is not a 1-D uint8 tensor"),
        (
            lambda p: p["tree"]["model"].__setitem__("w", {"__nanecho_packed_tensor__": 99}),
            "reference 99 is out of range",
        ),
        (lambda p: p.pop("tree"), "packed tensors lack tensors/blob/tree"),
        (lambda p: p["tree"].__setitem__("config", _nested(3000)), "packed tree is nested too deeply"),
    ],
)
def test_a_packed_file_whose_manifest_lies_is_refused_with_a_clear_error(
    tmp_path: Path, mutate, message
) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(_state(), path)
    raw = torch.load(path, weights_only=True)
    mutate(raw["packed"])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # lets torch.save write the deeply nested tree
    try:
        torch.save(raw, path)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(NanechoError, match="checkpoint is damaged") as info:
        load_checkpoint(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert message in str(info.value) and info.value.path == str(path)


def test_a_packed_file_with_a_pickled_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "c.pt"
    save_checkpoint(_state(), path)
    raw = torch.load(path, weights_only=True)
    raw["packed"]["tree"]["config"] = _Payload(marker)
    torch.save(raw, path)
    with pytest.raises(NanechoError, match="weights-only loader"):
        load_checkpoint(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert not marker.exists()

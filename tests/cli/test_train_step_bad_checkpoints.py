"""train-step and checkpoints whose bytes are honest but whose contents are wrong.

A sha256 only proves a file is the one that was saved: a crafted or edited checkpoint (re-hashed,
or given to --init-from without a sidecar) must be refused before any training, with one
`Error: <file>[:<json path>]: …` line and exit 2, leaving no step.json and no new checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from nanecho_core import checkpoint
from nanecho_core.checkpoint import UNPACKED_FORMAT, load_checkpoint
from nanecho_core.errors import NanechoError
from tests.cli.test_train_step import RUN, step, train
from tests.trainer_support import write_corpus, write_selection, write_tiny_config

Change = Callable[[dict[str, Any]], Any]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last checkpoint of a real 5-iteration session: (its state, its index entry)."""
    root = tmp_path_factory.mktemp("real")
    write_tiny_config(root)
    write_corpus(root)
    assert train(root, "--iters", "5").exit_code == 0
    entry = step(root)["checkpoints"][-1]
    return load_checkpoint(root / RUN / entry["file"], entry["sha256"]), entry


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_tiny_config(tmp_path)
    write_corpus(tmp_path)
    return tmp_path


def crafted(root: Path, state: dict[str, Any], change: Change) -> Path:
    """`state` with one field changed, saved by plain torch.save as an unpacked (/1) checkpoint."""
    bad = copy.deepcopy(state) | {"format": UNPACKED_FORMAT}
    change(bad)
    path = root / "crafted.pt"
    torch.save(bad, path)
    return path


def start_from(root: Path, mode: str, pt: Path, entry: dict[str, Any]) -> Any:
    """train-step from `pt`: --init-from (no sidecar, no hash check) or --resume with its true sha256."""
    if mode == "init-from":
        return train(root, "--init-from", str(pt), "--iters", "3")
    sha = hashlib.sha256(pt.read_bytes()).hexdigest()
    write_selection(root / "sel.json", {**entry, "sha256": sha}, pt, run="nanecho-test")
    return train(root, "--resume", str(root / "sel.json"), "--iters", "3")


def assert_refused_before_training(root: Path, result: Any, error: str) -> None:
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines() == [error]
    assert not (root / "step.json").exists()
    assert sorted((root / RUN).rglob("*.pt")) == []


BAD_FIELDS = [
    pytest.param(
        lambda s: s.update(fingerprints={}),
        ":$.fingerprints.model: expected a sha256 hex string, got nothing",
        id="fingerprints-empty",
    ),
    pytest.param(
        lambda s: s.update(fingerprints="abc"),
        ":$.fingerprints: expected a dict, got 'abc'",
        id="fingerprints-str",
    ),
    pytest.param(
        lambda s: s["fingerprints"].update(eval_split="abc"),
        ":$.fingerprints.eval_split: expected a sha256 hex string, got 'abc'",
        id="fingerprint-not-hex",
    ),
    pytest.param(lambda s: s.update(config="abc"), ":$.config: expected a dict, got 'abc'", id="config-str"),
    pytest.param(
        lambda s: s["config"].update(train=None),
        ":$.config.train: expected a dict, got None",
        id="config-section",
    ),
    pytest.param(lambda s: s.update(model="x"), ":$.model: expected a dict, got 'x'", id="model-str"),
    pytest.param(
        lambda s: s.update(optimizer="x"), ":$.optimizer: expected a dict, got 'x'", id="optimizer-str"
    ),
    pytest.param(lambda s: s.update(rng=[]), ":$.rng: expected a dict, got list", id="rng-list"),
    pytest.param(
        lambda s: s.update(best_val_loss=math.nan),
        ":$.best_val_loss: expected None or a finite number > 0, got nan",
        id="best-val-loss-nan",
    ),
    pytest.param(
        lambda s: s.update(last_val_loss=math.inf),
        ":$.last_val_loss: expected None or a finite number > 0, got inf",
        id="last-val-loss-inf",
    ),
    pytest.param(
        lambda s: s["train_accumulator"].update(loss_sum=math.nan),
        ":$.train_accumulator.loss_sum: expected a finite number >= 0, got nan",
        id="accumulator-nan",
    ),
    pytest.param(
        lambda s: s.update(iteration=-5),
        ":$.iteration: expected an integer in 0..2**53, got -5",
        id="iteration-negative",
    ),
    pytest.param(
        lambda s: s.update(iteration=10**30),
        ":$.iteration: expected an integer in 0..2**53, got 1000000000000000000000000000000",
        id="iteration-huge",
    ),
    pytest.param(
        lambda s: s.update(tokens_seen=1.5),
        ":$.tokens_seen: expected an integer in 0..2**53, got 1.5",
        id="tokens-seen-float",
    ),
    pytest.param(
        lambda s: s.update(id="not an id\n"),
        ":$.id: expected a checkpoint id (ckpt-<session>-<8 digits>), got 'not an id\\n'",
        id="id-not-an-id",
    ),
    pytest.param(
        lambda s: s.update(id=5),
        ":$.id: expected a checkpoint id (ckpt-<session>-<8 digits>), got 5",
        id="id-int",
    ),
    pytest.param(
        lambda s: s.update(parent_id="x"),
        ":$.parent_id: expected None or a checkpoint id, got 'x'",
        id="parent-id",
    ),
]


@pytest.mark.parametrize("mode", ["init-from", "resume"])
@pytest.mark.parametrize(("change", "error"), BAD_FIELDS)
def test_a_checkpoint_field_of_the_wrong_type_or_range_is_refused_before_training(
    root: Path, real: tuple[dict[str, Any], dict[str, Any]], mode: str, change: Change, error: str
) -> None:
    state, entry = real
    pt = crafted(root, state, change)
    result = start_from(root, mode, pt, entry)
    assert_refused_before_training(root, result, f"Error: {pt}{error}")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param(
            lambda s: s["model"].update({5: torch.zeros(1)}),
            ": checkpoint weights do not fit the model: 'int' object has no attribute 'startswith'",
            id="model-key-int",
        ),
        pytest.param(
            lambda s: s["optimizer"].update(state="x"),
            ": checkpoint training state is unusable: TypeError: optimizer state is a str, not a dict",
            id="optimizer-state-str",
        ),
        pytest.param(
            lambda s: s["rng"]["numpy"].__setitem__(1, s["rng"]["numpy"][1][:5]),
            ": checkpoint training state is unusable: IndexError: index 5 is out of bounds for axis 0 with size 5",
            id="numpy-key-short",
        ),
        pytest.param(
            lambda s: s["rng"]["numpy"].__setitem__(2, 10**30),
            ": checkpoint training state is unusable: OverflowError: Python int too large to convert to C long",
            id="numpy-position-huge",
        ),
    ],
)
def test_resuming_a_state_the_trainer_cannot_load_is_refused_before_training(
    root: Path, real: tuple[dict[str, Any], dict[str, Any]], change: Change, error: str
) -> None:
    state, entry = real
    pt = crafted(root, state, change)
    result = start_from(root, "resume", pt, entry)
    assert_refused_before_training(root, result, f"Error: {pt}{error}")


@pytest.mark.parametrize("mode", ["init-from", "resume"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_checkpoint_with_a_non_finite_weight_is_refused_before_training(
    root: Path, real: tuple[dict[str, Any], dict[str, Any]], mode: str, bad: float
) -> None:
    """A flipped exponent bit in a file without a sidecar: named at load, not as a NaN val loss later."""
    state, entry = real
    name = "transformer.h.0.mlp.c_fc.weight"
    pt = crafted(root, state, lambda s: s["model"][name].view(-1).__setitem__(7, bad))
    result = start_from(root, mode, pt, entry)
    error = (
        f'Error: {pt}:$.model["{name}"]: checkpoint weight holds NaN or inf values: '
        "the file is corrupt or its run diverged"
    )
    assert_refused_before_training(root, result, error)


def test_a_truncated_checkpoint_without_a_sidecar_is_called_truncated(
    root: Path, real: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    state, _ = real
    pt = crafted(root, state, lambda s: None)
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    result = train(root, "--init-from", str(pt), "--iters", "3")
    assert_refused_before_training(
        root,
        result,
        f"Error: {pt}: checkpoint is truncated or not a torch checkpoint (PytorchStreamReader failed reading "
        "zip archive: failed finding central directory)",
    )


def test_a_checkpoint_whose_sidecar_cannot_be_written_is_removed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(path: Path, doc: Any) -> None:
        raise NanechoError("cannot write: No space left on device", path)

    monkeypatch.setattr(checkpoint, "atomic_write_json", disk_full)
    result = train(root, "--iters", "5")
    assert result.exit_code == 2, result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"Error: {root / RUN}/cache/checkpoints/ckpt-"), error
    assert error.endswith(".json: cannot write: No space left on device"), error
    assert not (root / "step.json").exists()
    assert sorted((root / RUN).rglob("*.pt")) == []


def test_init_from_a_file_without_a_sidecar_trains_and_says_it_was_not_verified(
    root: Path, real: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    state, entry = real
    pt = crafted(root, state, lambda s: None)
    warning = f"{pt} has no sidecar (.json) with its sha256: loaded it unverified"

    result = train(root, "--init-from", str(pt), "--iters", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines().count(warning) == 1
    assert step(root)["init_from"] == entry["id"]

    (root / "step.json").unlink()
    pt.with_suffix(".json").write_text(
        json.dumps({**entry, "sha256": hashlib.sha256(pt.read_bytes()).hexdigest()})
    )
    result = train(root, "--init-from", str(pt), "--iters", "3")
    assert result.exit_code == 0, result.stderr
    assert "unverified" not in result.stderr

"""Byte-level data: corpus -> cached uint16 tokens, a fixed eval split, a resumable batch cursor."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanecho_core.errors import NanechoError
from nanecho_core.fsio import atomic_writer, read_bytes

TOKENIZER = {"name": "bytes", "vocab_size": 256}
BUNDLED_CORPUS = "tinyshakespeare.txt"
# Eval batches are drawn from their own generator with a fixed seed: the same windows in every
# session, independent of the training seed and state, so val losses are comparable over time.
EVAL_SEED = 0x5EED_E7A1
EVAL_SET_FINGERPRINT_TAG = b"nanecho-eval-set/1\n"  # so a digest of batches never equals a split's


def bundled_corpus_bytes() -> bytes:
    return (resources.files("nanecho_core") / "corpus" / BUNDLED_CORPUS).read_bytes()


def read_corpus(path: str | os.PathLike[str] | None) -> bytes:
    """The corpus bytes: the bundled tinyshakespeare when `path` is None."""
    if path is None:
        return bundled_corpus_bytes()
    try:
        data = read_bytes(path)
    except FileNotFoundError as exc:
        raise NanechoError("corpus not found", path) from exc
    except IsADirectoryError as exc:
        raise NanechoError("corpus is a directory, expected a file", path) from exc
    except OSError as exc:
        raise NanechoError(f"cannot read corpus: {exc.strerror or exc}", path) from exc
    if not data:
        raise NanechoError("corpus is empty", path)
    return data


def cached_tokens(corpus: bytes, cache_dir: Path) -> np.memmap:
    """Tokens of `corpus` as a read-only uint16 memmap at <cache_dir>/<corpus sha256>.bin."""
    digest = hashlib.sha256(corpus).hexdigest()
    target = cache_dir / f"{digest}.bin"
    expected_bytes = len(corpus) * 2
    if not target.exists() or target.stat().st_size != expected_bytes:
        tokens = np.frombuffer(corpus, dtype=np.uint8).astype(np.uint16)
        try:
            with atomic_writer(target, "wb") as handle:
                handle.write(tokens.tobytes())
        except OSError as exc:
            raise NanechoError(f"cannot write token cache: {exc.strerror or exc}", target) from exc
    return np.memmap(target, dtype=np.uint16, mode="r")


@dataclass
class Splits:
    """Train and eval token tensors (int64, ready for the embedding) and their fingerprints."""

    train: torch.Tensor
    eval: torch.Tensor
    data_fingerprint: str
    eval_split_fingerprint: str


def split_tokens(tokens: np.ndarray, eval_fraction: float, block_size: int) -> Splits:
    """Train = the first (1 - eval_fraction) of the tokens, eval = the rest; disjoint by position."""
    n = int(tokens.shape[0])
    n_eval = int(n * eval_fraction)
    cut = n - n_eval
    train_np, eval_np = tokens[:cut], tokens[cut:]
    for name, part in (("train", train_np), ("eval", eval_np)):
        if part.shape[0] < block_size + 2:
            raise NanechoError(
                f"corpus too small: the {name} split has {part.shape[0]} tokens, "
                f"needs more than block_size + 1 = {block_size + 1}"
            )
    return Splits(
        train=torch.from_numpy(np.asarray(train_np, dtype=np.int64)),
        eval=torch.from_numpy(np.asarray(eval_np, dtype=np.int64)),
        data_fingerprint=hashlib.sha256(np.ascontiguousarray(train_np).tobytes()).hexdigest(),
        eval_split_fingerprint=hashlib.sha256(np.ascontiguousarray(eval_np).tobytes()).hexdigest(),
    )


def load_splits(
    corpus_path: str | os.PathLike[str] | None, cache_dir: Path, eval_fraction: float, block_size: int
) -> Splits:
    return split_tokens(cached_tokens(read_corpus(corpus_path), cache_dir), eval_fraction, block_size)


class BatchCursor:
    """Random training windows from a dedicated generator; its state *is* the data position.

    Saving `state()` and restoring it with `load_state()` makes the next batch exactly the one an
    uninterrupted run would have drawn.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, block_size: int, seed: int) -> None:
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_drawn = 0
        self._offsets = torch.arange(block_size)
        self._high = int(tokens.shape[0]) - block_size - 1

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, self._high + 1, (self.batch_size,), generator=self.generator)
        index = starts.unsqueeze(1) + self._offsets  # gathers, no Python loop over rows
        self.batches_drawn += 1
        return self.tokens[index], self.tokens[index + 1]

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "batches_drawn": self.batches_drawn}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.batches_drawn = int(state["batches_drawn"])


def eval_batches(
    tokens: torch.Tensor, batch_size: int, block_size: int, count: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed eval set: `count` batches of windows drawn with EVAL_SEED (same in every session)."""
    cursor = BatchCursor(tokens, batch_size, block_size, EVAL_SEED)
    return [cursor.next_batch() for _ in range(count)]


def eval_set_fingerprint(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """sha256 over the eval batches' tokens (inputs and targets, in order).

    Two val losses are comparable exactly when this is equal: it changes with the eval split and
    with everything that picks windows from it (batch size, block size, eval_iters, the seed).
    """
    digest = hashlib.sha256(EVAL_SET_FINGERPRINT_TAG)
    for x, y in batches:
        for part in (x, y):
            digest.update(np.ascontiguousarray(part.cpu().numpy(), dtype="<i8").tobytes())
    return digest.hexdigest()

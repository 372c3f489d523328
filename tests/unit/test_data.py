"""Byte-level data: cached tokens, disjoint fixed eval split, fingerprints, resumable cursor."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from nanecho_core.data import (
    BatchCursor,
    bundled_corpus_bytes,
    cached_tokens,
    eval_batches,
    eval_set_fingerprint,
    load_splits,
    read_corpus,
    split_tokens,
)
from nanecho_core.errors import NanechoError


def test_tokens_are_the_corpus_bytes_cached_under_their_sha256(tmp_path: Path) -> None:
    corpus = "héllo wörld\n".encode() * 50
    tokens = cached_tokens(corpus, tmp_path)
    target = tmp_path / f"{hashlib.sha256(corpus).hexdigest()}.bin"
    assert target.stat().st_size == 2 * len(corpus)
    assert tokens.dtype == np.uint16 and list(tokens[:3]) == list(corpus[:3])
    assert max(tokens) < 256
    mtime = target.stat().st_mtime_ns
    cached_tokens(corpus, tmp_path)
    assert target.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_eval_split_is_the_last_tenth_and_never_overlaps_train() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    splits = split_tokens(tokens, 0.1, 8)
    assert splits.train.tolist() == list(range(900))
    assert splits.eval.tolist() == list(range(900, 1000))
    assert not set(splits.train.tolist()) & set(splits.eval.tolist())
    assert splits.data_fingerprint == hashlib.sha256(tokens[:900].tobytes()).hexdigest()
    assert splits.eval_split_fingerprint == hashlib.sha256(tokens[900:].tobytes()).hexdigest()


def test_eval_set_fingerprint_changes_with_everything_that_picks_the_eval_windows() -> None:
    splits = split_tokens(np.arange(3000, dtype=np.uint16) % 251, 0.1, 8)

    def fp(split: torch.Tensor = splits.eval, batch: int = 4, block: int = 8, count: int = 3) -> str:
        return eval_set_fingerprint(eval_batches(split, batch, block, count))

    base = fp()
    assert fp() == base  # the same windows every time: a fixed seed, not the training RNG
    others = [fp(batch=5), fp(block=7), fp(count=4), fp(split=splits.eval.roll(1))]
    assert len({base, *others}) == 5
    assert base != splits.eval_split_fingerprint
    x, y = eval_batches(splits.eval, 4, 8, 1)[0]
    assert fp(count=1) == eval_set_fingerprint([(x.clone(), y.clone())])
    y[0, 0] += 1  # a target alone changes the losses, so it changes the fingerprint
    assert fp(count=1) != eval_set_fingerprint([(x, y)])


def test_training_batches_never_read_eval_tokens() -> None:
    tokens = np.arange(2000, dtype=np.uint16) % 256
    splits = split_tokens(np.arange(300, dtype=np.uint16), 0.1, 8)
    cursor = BatchCursor(splits.train, 64, 8, seed=1)
    for _ in range(50):
        x, y = cursor.next_batch()
        assert int(y.max()) < 270  # the last train token is 269
        assert torch.equal(x[:, 1:], y[:, :-1])
    assert tokens.shape == (2000,)


def test_cursor_state_resumes_with_exactly_the_next_batch() -> None:
    data = torch.arange(5000)
    one = BatchCursor(data, 4, 16, seed=7)
    for _ in range(5):
        one.next_batch()
    state = one.state()
    expected = one.next_batch()
    other = BatchCursor(data, 4, 16, seed=999)
    other.load_state(state)
    got = other.next_batch()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert other.batches_drawn == 6


def test_eval_batches_are_fixed_whatever_the_training_seed() -> None:
    data = torch.arange(3000)
    torch.manual_seed(1)
    first = eval_batches(data, 4, 16, 3)
    torch.manual_seed(2)
    second = eval_batches(data, 4, 16, 3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


def test_bundled_corpus_is_tinyshakespeare_and_loads(tmp_path: Path) -> None:
    assert bundled_corpus_bytes().startswith(b"First Citizen:")
    splits = load_splits(None, tmp_path, 0.1, 64)
    assert splits.train.numel() + splits.eval.numel() == len(bundled_corpus_bytes())


def test_missing_or_empty_corpus_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NanechoError, match="corpus not found"):
        read_corpus(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(NanechoError, match="empty"):
        read_corpus(tmp_path / "empty.txt")
    with pytest.raises(NanechoError, match="too small"):
        split_tokens(np.arange(20, dtype=np.uint16), 0.1, 16)


def test_a_corpus_that_is_a_device_is_refused_and_a_pipe_is_read(tmp_path: Path) -> None:
    # train-step --corpus /dev/zero grew to 24 GB; --corpus <(cat text) must keep working.
    if not (os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)):
        pytest.skip("needs the character device /dev/null")
    with pytest.raises(NanechoError) as caught:
        read_corpus("/dev/null")
    assert str(caught.value) == "Error: /dev/null: is a device, not a file"
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    writer = threading.Thread(target=pipe.write_bytes, args=(b"piped text\n",), daemon=True)
    writer.start()
    assert read_corpus(pipe) == b"piped text\n"
    writer.join(5)

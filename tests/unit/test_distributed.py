"""distributed.py without a process group: the torchrun environment, batch slices, rank seeds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nanecho_core import distributed
from nanecho_core.distributed import Distributed, WorldEnv, check_divisible, world_from_env
from nanecho_core.errors import NanechoError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture(autouse=True)
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_a_plain_process_is_rank_0_of_1_and_needs_no_process_group() -> None:
    assert world_from_env() == WorldEnv(rank=0, world_size=1, local_rank=0)
    assert distributed.is_main_process()
    with distributed.process_group("auto") as ctx:
        assert ctx is None


def test_torchrun_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world_from_env() == WorldEnv(rank=3, world_size=4, local_rank=1)
    assert not distributed.is_main_process()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "x"}, "environment variable RANK='x' is not an integer"),
        (
            {"RANK": "2", "WORLD_SIZE": "2"},
            "inconsistent torchrun environment: RANK=2 WORLD_SIZE=2 LOCAL_RANK=0",
        ),
        (
            {"WORLD_SIZE": "0"},
            "inconsistent torchrun environment: RANK=0 WORLD_SIZE=0 LOCAL_RANK=0",
        ),
    ],
)
def test_a_broken_torchrun_environment_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NanechoError) as caught:
        world_from_env()
    assert caught.value.message == message


def test_the_global_batch_splits_into_equal_contiguous_rank_slices() -> None:
    assert check_divisible(12, 4) == 3
    slices = [Distributed(WorldEnv(r, 4, r), "gloo", "cpu").rows(12) for r in range(4)]
    assert slices == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    with pytest.raises(NanechoError) as caught:
        check_divisible(12, 5)
    assert caught.value.message.startswith("train.batch_size 12 is not divisible by the 5 processes")


def test_backend_is_nccl_on_gpus_and_gloo_on_cpus() -> None:
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"


def test_rank_dropout_streams_depend_on_seed_iteration_and_rank_only() -> None:
    import torch

    def draws(rank: int, iteration: int) -> torch.Tensor:
        torch.manual_seed(12345)  # whatever the state before, ranks > 0 replace it
        Distributed(WorldEnv(rank, 3, rank), "gloo", "cpu").seed_dropout(1337, iteration)
        return torch.rand(4)

    torch.manual_seed(12345)
    rank0 = torch.rand(4)
    assert torch.equal(draws(0, 7), rank0)  # rank 0 keeps its (checkpointed) stream
    assert torch.equal(draws(1, 7), draws(1, 7))
    assert not torch.equal(draws(1, 7), draws(2, 7))
    assert not torch.equal(draws(1, 7), draws(1, 8))
    assert not torch.equal(draws(1, 7), rank0)


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, nanecho_core.distributed as d; d.is_main_process(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "WORLD_SIZE > 1 but MASTER_ADDR is not set: start the ranks with torchrun"),
        ({"MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT must be a port number (1-65535), got ''"),
        (
            {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "abc"},
            "MASTER_PORT must be a port number (1-65535), got 'abc'",
        ),
        (
            {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
            "MASTER_PORT must be a port number (1-65535), got '99999'",
        ),
        (  # str.isdigit() accepts a superscript two; int() does not
            {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "\u00b2"},
            "MASTER_PORT must be a port number (1-65535), got '\u00b2'",
        ),
    ],
)
def test_a_rendezvous_torchrun_would_have_set_is_checked_before_joining(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    # torch raised ValueError (a traceback) from init_process_group for each of these.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NanechoError) as caught:
        distributed.init_from_env("cpu")
    assert caught.value.message == message

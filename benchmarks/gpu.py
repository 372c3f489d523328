"""GPU throughput and MFU of train-step's engine on a ~124M-parameter config; checkpoint I/O vs raw disk.

    python benchmarks/gpu.py [--iters 60] [--batch 16] [--no-compile] [--peak-tflops 989.4]

Needs a CUDA device. The model is GPT-2 small's width (12 heads, 768 dims, block 1024) made 17
layers deep so that with the 256-symbol byte vocabulary it still has ~121M parameters. Runs bf16
autocast, fused AdamW, SDPA (flash) attention and torch.compile; prints tokens/s, ms/iter and
MFU = model FLOP/s ÷ the device's dense bf16 peak (H100 SXM: 989.4 TFLOP/s), plus the measured
bf16 GEMM peak of this card, and checkpoint save+load time as a ratio to a raw write+read (fsync)
of the same number of bytes on the same disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nanecho_core.checkpoint import FORMAT, REQUIRED_KEYS, load_checkpoint, save_checkpoint
from nanecho_core.data import load_splits
from nanecho_core.presets import resolve_config
from nanecho_core.trainer import Trainer

DENSE_BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def measured_bf16_gemm_tflops(n: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def raw_io_seconds(n_bytes: int, directory: Path) -> float:
    payload = os.urandom(min(n_bytes, 1 << 26)) * (n_bytes // min(n_bytes, 1 << 26) + 1)
    payload = payload[:n_bytes]
    target = directory / "raw.bin"
    t0 = time.perf_counter()
    with open(target, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    data = target.read_bytes()
    elapsed = time.perf_counter() - t0
    assert len(data) == n_bytes
    target.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for k, v in DENSE_BF16_PEAK_TFLOPS.items() if k in name), None)

    config = resolve_config(
        "full",
        {
            "model": {"n_layer": 17, "n_head": 12, "n_embd": 768, "block_size": 1024, "dropout": 0.0},
            "train": {"batch_size": args.batch, "compile": not args.no_compile, "eval_iters": 2},
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        splits = load_splits(None, Path(tmp) / "cache", 0.1, 1024)
        trainer = Trainer(config, splits, "cuda")
        n_params = sum(p.numel() for p in trainer.raw_model.parameters())
        flops_per_token = trainer.raw_model.estimate_flops_per_token()
        tokens_per_iter = trainer.tokens_per_iter
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            trainer.train_one_iteration()
        torch.cuda.synchronize()
        warm_s = time.perf_counter() - t0
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            loss = trainer.train_one_iteration()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1e3
        tok_s = tokens_per_iter / (ms / 1e3)
        achieved = flops_per_token * tok_s / 1e12

        print(
            json.dumps(
                {
                    "device": name,
                    "ms_per_iter": round(ms, 2),
                    "tokens_per_s": round(tok_s),
                    "model_tflops": round(achieved, 1),
                }
            ),
            flush=True,
        )
        state = trainer.training_state()
        state.update({k: state.get(k) for k in REQUIRED_KEYS})
        state["format"] = FORMAT
        path = Path(tmp) / "ckpt.pt"
        t0 = time.perf_counter()
        sha, n_bytes = save_checkpoint(state, path)
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = load_checkpoint(path, sha)
        load_s = time.perf_counter() - t0
        assert loaded["iteration"] == trainer.iteration
        raw_s = raw_io_seconds(n_bytes, Path(tmp))
        gemm = measured_bf16_gemm_tflops()

    report = {
        "device": name,
        "torch": torch.__version__,
        "params_M": round(n_params / 1e6, 1),
        "tokens_per_iter": tokens_per_iter,
        "compile": not args.no_compile,
        "warmup_s": round(warm_s, 1),
        "ms_per_iter": round(ms, 2),
        "tokens_per_s": round(tok_s),
        "model_tflops": round(achieved, 1),
        "mfu_vs_dense_bf16_peak": None if peak is None else round(achieved / peak, 3),
        "dense_bf16_peak_tflops": peak,
        "measured_bf16_gemm_tflops": round(gemm, 1),
        "mfu_vs_measured_gemm": round(achieved / gemm, 3),
        "final_loss": round(float(loss.item()), 4),
        "checkpoint_bytes": n_bytes,
        "save_s": round(save_s, 3),
        "load_s": round(load_s, 3),
        "raw_write_read_s": round(raw_s, 3),
        "ckpt_io_ratio": round((save_s + load_s) / raw_s, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

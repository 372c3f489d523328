"""Training presets and config resolution (no torch: ckpt-select uses them for compatibility)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nanecho_core import fastschema
from nanecho_core.errors import NanechoError
from nanecho_core.fingerprints import model_fingerprint
from nanecho_core.fsio import read_json

# nanoGPT's CPU configuration (README "I only have a macbook"): 4 layers, 4 heads, 128 dims,
# block 64, batch 12, dropout 0, on the byte-level corpus (vocab 256).
_NANOGPT_CPU_MODEL = {
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "block_size": 64,
    "vocab_size": 256,
    "dropout": 0.0,
    "bias": False,
}

_BASE_TRAIN = {
    "batch_size": 12,
    "grad_accum": 1,
    # nanoGPT's 1e-3 is tuned for its 10.7M-parameter model; this 0.8M one trains better at 4e-3
    # (2000 iterations, fixed eval: 1e-3 -> 1.889, 2e-3 -> 1.825, 3e-3 -> 1.786, 4e-3 -> 1.772,
    # 6e-3 -> 1.774; docs/training.md). The "full" preset sets nanoGPT's 1e-3 back.
    "learning_rate": 4e-3,
    "min_lr": 4e-4,  # learning_rate / 10
    "warmup_iters": 100,
    "lr_decay_iters": 2000,  # cosine horizon in global iterations; constant min_lr after
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,  # bigger than default: few tokens per iteration
    "grad_clip": 1.0,
    "eval_interval": 100,
    "eval_iters": 20,
    "log_interval": 10,
    "seed": 1337,
    "compile": False,
    "dtype": "float32",
    "max_minutes": None,
}

PRESETS: dict[str, dict[str, Any]] = {
    # A useful session in under a minute on 2 CPU cores (CI on every push): measured 17-20 ms/iter
    # with the hand-written CPU step (27-33 through autograd) + a few s of start-up + 10 evals of
    # 0.12 s (docs/training.md); two sessions end the cosine.
    "ci": {
        "schema_version": 1,
        "preset": "ci",
        "model": dict(_NANOGPT_CPU_MODEL),
        "train": {**_BASE_TRAIN, "iters": 1000},
        "data": {"corpus": None, "eval_fraction": 0.1},
    },
    # Nightly: the same model, a longer session bounded by wall time.
    "scheduled": {
        "schema_version": 1,
        "preset": "scheduled",
        "model": dict(_NANOGPT_CPU_MODEL),
        "train": {**_BASE_TRAIN, "iters": 2000, "max_minutes": 30.0},
        "data": {"corpus": None, "eval_fraction": 0.1},
    },
    # nanoGPT's shakespeare-char model: for a GPU runner or a long manual session.
    "full": {
        "schema_version": 1,
        "preset": "full",
        "model": {
            "n_layer": 6,
            "n_head": 6,
            "n_embd": 384,
            "block_size": 256,
            "vocab_size": 256,
            "dropout": 0.2,
            "bias": False,
        },
        "train": {
            **_BASE_TRAIN,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "min_lr": 1e-4,
            "warmup_iters": 100,
            "lr_decay_iters": 5000,
            "eval_interval": 250,
            "eval_iters": 50,
            "iters": 5000,
            "max_minutes": 120.0,
        },
        "data": {"corpus": None, "eval_fraction": 0.1},
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def resolve_config(
    preset: str,
    overrides: Mapping[str, Any] | None = None,
    override_path: str | Path | None = None,
) -> dict[str, Any]:
    """The preset deep-merged with an override document; the result is schema-validated."""
    if preset not in PRESETS:
        raise NanechoError(f"unknown preset {preset!r}; choose one of {', '.join(preset_names())}")
    config = copy.deepcopy(PRESETS[preset])
    if overrides:
        for section, values in overrides.items():
            if section in ("schema_version", "preset"):
                continue
            if not isinstance(values, Mapping):
                raise NanechoError(f"section {section!r} must be an object", override_path, f"$.{section}")
            config.setdefault(section, {}).update(values)
    fastschema.validate(config, "config", override_path)
    model = config["model"]
    if model["n_embd"] % model["n_head"] != 0:
        raise NanechoError(
            f"model.n_embd ({model['n_embd']}) must be divisible by model.n_head ({model['n_head']})",
            override_path,
            "$.model.n_embd",
        )
    return config


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a --config override file (any subset of the config schema)."""
    return dict(fastschema.validate(read_json(path), "config", path))


def preset_model_fingerprint(preset: str, override_path: str | Path | None = None) -> str:
    overrides = load_config_file(override_path) if override_path else None
    return model_fingerprint(resolve_config(preset, overrides, override_path)["model"])

"""Content fingerprints that identify what a checkpoint is compatible with (no torch, no numpy)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "dropout", "bias")
# Dropout changes training, not the shapes a checkpoint holds, so it is not part of compatibility.
ARCHITECTURE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")


def canonical_model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture fields of a model config, the only ones that decide whether weights fit."""
    missing = [k for k in ARCHITECTURE_KEYS if k not in model]
    if missing:
        raise KeyError(", ".join(missing))
    return {k: model[k] for k in ARCHITECTURE_KEYS}


def model_fingerprint(model: Mapping[str, Any]) -> str:
    """sha256 of the canonical architecture config: equal fingerprints mean loadable weights."""
    text = json.dumps(canonical_model_config(model), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

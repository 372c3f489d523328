"""Pack every tensor of a checkpoint dict into one byte blob, and back.

torch's file format stores each tensor as its own zip record, and the weights-only unpickler
(pure Python) rebuilds each one: for the ci model's ~110 tensors (weights, two AdamW moments and
a step per parameter, RNG states) that fixed cost was as large as writing the 10 MB to disk.
Packed, the same dict is one record plus a small manifest, and loading is one read plus one copy
per tensor. The packed dict holds only tensors, numbers, strings and containers, so it still loads
with `torch.load(weights_only=True)`.

    {"tensors": [[dtype, shape, offset], ...], "blob": uint8 tensor, "tree": <the dict, each
     tensor replaced by {PLACEHOLDER: index}>}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

PLACEHOLDER = "__nanecho_packed_tensor__"
ALIGN = 64  # every tensor starts on a 64-byte boundary: aligned views for any dtype

_DTYPES = {
    str(dtype): dtype
    for dtype in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


class PackError(ValueError):
    """A packed dict whose manifest does not describe its blob."""


def pack(state: dict[str, Any]) -> dict[str, Any]:
    """The dict with its tensors moved into one blob (the caller's dict is not modified)."""
    tensors: list[torch.Tensor] = []

    def strip(node: Any) -> Any:
        if not isinstance(node, torch.Tensor):
            return None
        tensors.append(node.detach())
        return {PLACEHOLDER: len(tensors) - 1}

    tree = _rebuild(state, strip)
    manifest: list[list[Any]] = []
    spans: list[tuple[int, int, int]] = []  # (start, data bytes, end of padding) in the blob
    offset = 0
    for tensor in tensors:
        if str(tensor.dtype) not in _DTYPES:
            raise TypeError(f"cannot pack a {tensor.dtype} tensor")
        manifest.append([str(tensor.dtype), list(tensor.shape), offset])
        nbytes = tensor.numel() * tensor.element_size()
        spans.append((offset, nbytes, offset + -(-nbytes // ALIGN) * ALIGN))
        offset = spans[-1][2]
    blob = torch.empty(offset, dtype=torch.uint8)
    for tensor, (start, nbytes, end) in zip(tensors, spans, strict=True):
        if nbytes:
            blob[start : start + nbytes].copy_(tensor.reshape(-1).view(torch.uint8))
        blob[start + nbytes : end].zero_()  # padding: identical states, identical bytes
    return {"tensors": manifest, "blob": blob, "tree": tree}


def unpack(packed: Any) -> Any:
    """The original dict, each tensor copied out of the blob. Bad manifests -> PackError."""
    if not isinstance(packed, dict) or set(packed) != {"tensors", "blob", "tree"}:
        raise PackError("packed tensors lack tensors/blob/tree")
    blob, manifest = packed["blob"], packed["tensors"]
    if not isinstance(blob, torch.Tensor) or blob.dtype != torch.uint8 or blob.dim() != 1:
        raise PackError("packed blob is not a 1-D uint8 tensor")
    if not isinstance(manifest, list):
        raise PackError("packed manifest is not a list")
    views = [_view(blob, k, entry) for k, entry in enumerate(manifest)]

    def fill(node: Any) -> Any:
        if not (isinstance(node, dict) and set(node) == {PLACEHOLDER}):
            return None
        index = node[PLACEHOLDER]
        if not isinstance(index, int) or not 0 <= index < len(views):
            raise PackError(f"packed tensor reference {index!r} is out of range")
        return views[index]

    try:
        return _rebuild(packed["tree"], fill)
    except RecursionError:  # a crafted tree thousands of levels deep; real ones are a few
        raise PackError("packed tree is nested too deeply") from None


def _rebuild(node: Any, replace: Callable[[Any], Any]) -> Any:
    """A copy of a tree of dicts, lists and tuples; `replace(node)` gives a node's stand-in, or None."""
    stand_in = replace(node)
    if stand_in is not None:
        return stand_in
    if isinstance(node, dict):
        return {key: _rebuild(value, replace) for key, value in node.items()}
    if isinstance(node, list):
        return [_rebuild(value, replace) for value in node]
    if isinstance(node, tuple):
        return tuple(_rebuild(value, replace) for value in node)
    return node


def _view(blob: torch.Tensor, k: int, entry: Any) -> torch.Tensor:
    try:
        dtype_name, shape, start = entry
        dtype = _DTYPES[dtype_name]
        if not all(isinstance(n, int) and n >= 0 for n in shape) or not isinstance(start, int):
            raise ValueError
    except (TypeError, ValueError, KeyError):
        raise PackError(f"packed tensor {k} has a malformed manifest entry") from None
    nbytes = math.prod(shape) * dtype.itemsize
    if start < 0 or start % ALIGN or start + nbytes > blob.numel():
        raise PackError(f"packed tensor {k} lies outside the blob")
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    # A copy, not a view: each tensor owns its storage, as after torch.load (torch.set_rng_state,
    # for one, reads a view's storage from its start and crashes).
    return blob[start : start + nbytes].view(dtype).view(shape).clone()

"""The CPU training step written out by hand: model.GPT's forward and backward on oneDNN products.

Why not autograd: on CPU the model's matmuls are ~70% of an iteration, and torch sends every fp32
`mm` to MKL, which on AMD CPUs runs its AVX2 code at about half the machine's AVX-512 FMA rate.
oneDNN, part of every x86 torch build, runs the same products up to twice as fast there, but torch
uses it for fp32 only at inference (`mkldnn._linear_pointwise` has no autograd formula). So this
module does the step itself: the forward keeps what the backward needs, and the backward calls the
kernels autograd would (layer norm, flash attention and GELU backward) and oneDNN for every product.

Gradients equal autograd's up to fp32 rounding (tested); a run is deterministic for a fixed thread
count, which exact resume needs. The trainer uses this for the plain CPU case (no dropout, no bias,
one process, see `supports`); everything else trains through autograd.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor
from torch.nn import functional as F

from nanecho_core.errors import NanechoError
from nanecho_core.model import GPT, Block

aten = torch.ops.aten
EPS = 1e-5  # model.LayerNorm's
ENGINES = ("auto", "onednn", "mm", "autograd")


def onednn_available() -> bool:
    """oneDNN's fp32 linear is reachable and measured: x86-64 only (on ARM it is a different backend)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def resolve_engine(requested: str, model: GPT, device: str, distributed: bool) -> str:
    """The engine a session trains `model` with: "onednn", "mm" (both hand-written) or "autograd".

    `requested` is NANECHO_CPU_ENGINE: auto (the default) takes the hand-written step wherever it
    applies, on oneDNN where that is available (x86-64 builds of torch), else on torch.mm.
    """
    if requested not in ENGINES:
        raise NanechoError(f"NANECHO_CPU_ENGINE must be one of {', '.join(ENGINES)}, not {requested!r}")
    if requested == "autograd" or not supports(model, device, distributed):
        return "autograd"
    if requested == "mm" or not onednn_available():
        return "mm"
    return "onednn"


def supports(model: GPT, device: str, distributed: bool) -> bool:
    """The cases the hand-written step covers; the rest keep autograd.

    It computes model.GPT exactly as written: no dropout, no biases, the output head tied to the
    token embedding, every parameter trained.
    """
    config = model.config
    if device != "cpu" or distributed or config.dropout != 0.0 or config.bias:
        return False
    tied = model.lm_head.weight is model.transformer.wte.weight
    return tied and all(p.requires_grad for p in model.parameters())


@dataclass(frozen=True)
class Products:
    """`x @ w.T` (a Linear without bias) and its two gradients, on oneDNN or on torch.mm."""

    onednn: bool

    def linear(self, x: Tensor, w: Tensor) -> Tensor:
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return torch.mm(x, w.t())

    def linear_add(self, x: Tensor, w: Tensor, residual: Tensor) -> Tensor:
        """residual + x @ w.T, the add fused into the product."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, None, "add")
        return torch.addmm(residual, x, w.t())

    def grad_input(self, dy: Tensor, w: Tensor) -> Tensor:
        """dy @ w, the gradient of the Linear's input."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(dy, w.t(), None, "none", [], "")
        return torch.mm(dy, w)

    def grad_weight(self, dy: Tensor, x: Tensor) -> Tensor:
        """dy.T @ x, the gradient of the weight (out, in); may be a transposed view."""
        if not self.onednn:
            return torch.mm(dy.t(), x)
        # oneDNN reduces over the 768 rows faster when the output's long side is its columns.
        if dy.size(1) >= x.size(1):
            return torch.ops.mkldnn._linear_pointwise(x.t(), dy.t(), None, "none", [], "").t()
        return torch.ops.mkldnn._linear_pointwise(dy.t(), x.t(), None, "none", [], "")


def _layer_norm_backward(grad: Tensor, x: Tensor, stats: tuple[Tensor, Tensor], weight: Tensor) -> Tensor:
    """The gradient of a bias-free LayerNorm's input; its weight's gradient goes to weight.grad."""
    dx, dw, _ = aten.native_layer_norm_backward(
        grad, x, [x.size(-1)], *stats, weight, None, [True, True, False]
    )
    _accumulate(weight, dw)
    return cast(Tensor, dx)


def _accumulate(param: Tensor, grad: Tensor) -> None:
    if param.grad is None:
        param.grad = grad.contiguous()
    else:
        param.grad.add_(grad)


@dataclass
class _Saved:
    """One block's forward values that its backward reads."""

    x: Tensor
    h1: Tensor
    ln1: tuple[Tensor, Tensor]
    qkv: tuple[Tensor, Tensor, Tensor]
    y: Tensor
    lse: Tensor
    x1: Tensor
    h2: Tensor
    ln2: tuple[Tensor, Tensor]
    f: Tensor
    g: Tensor


@torch.no_grad()
def eval_loss(model: GPT, idx: Tensor, targets: Tensor, products: Products) -> Tensor:
    """The mean cross-entropy of `model(idx, targets)`, computed as the hand-written step does (for eval)."""
    x, _ = _forward(model, idx, products, saved=None)
    _, _, logp = _head(model, x, products)
    return F.nll_loss(logp, targets.reshape(-1))


def _head(model: GPT, x: Tensor, products: Products) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
    """The final LayerNorm's output and (mean, rstd), and the log-probabilities of the tied head."""
    hf, mean, rstd = aten.native_layer_norm(x, [x.size(-1)], model.transformer.ln_f.weight, None, EPS)
    return hf, (mean, rstd), torch.log_softmax(products.linear(hf, model.transformer.wte.weight), dim=-1)


def _forward(
    model: GPT, idx: Tensor, products: Products, saved: list[_Saved] | None
) -> tuple[Tensor, list[Block]]:
    """The residual stream after the last block, (rows, channels); each block's values into `saved`."""
    cfg = model.config
    batch, seq = idx.shape
    if seq > cfg.block_size:
        raise ValueError(f"sequence of length {seq} exceeds block_size {cfg.block_size}")
    channels, heads = cfg.n_embd, cfg.n_head
    rows, head_dim = batch * seq, channels // cfg.n_head
    tr = model.transformer
    x = (
        tr.wte.weight.index_select(0, idx.reshape(-1)).view(batch, seq, channels) + tr.wpe.weight[:seq]
    ).view(rows, channels)
    blocks = cast(list[Block], list(tr.h))
    for block in blocks:
        h1, mean1, rstd1 = aten.native_layer_norm(x, [channels], block.ln_1.weight, None, EPS)
        qkv = products.linear(h1, block.attn.c_attn.weight)
        q, k, v = (t.transpose(1, 2) for t in qkv.view(batch, seq, 3, heads, head_dim).unbind(2))
        y, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
        x1 = products.linear_add(y.transpose(1, 2).reshape(rows, channels), block.attn.c_proj.weight, x)
        h2, mean2, rstd2 = aten.native_layer_norm(x1, [channels], block.ln_2.weight, None, EPS)
        f = products.linear(h2, block.mlp.c_fc.weight)
        g = aten.gelu(f)
        if saved is not None:
            saved.append(_Saved(x, h1, (mean1, rstd1), (q, k, v), y, lse, x1, h2, (mean2, rstd2), f, g))
        x = products.linear_add(g, block.mlp.c_proj.weight, x1)
    return x, blocks


@torch.no_grad()
def forward_backward(
    model: GPT, idx: Tensor, targets: Tensor, products: Products, scale: float = 1.0
) -> Tensor:
    """The loss on (idx, targets) times `scale`; adds `scale` * its gradient to every parameter's .grad.

    Same function as `model(idx, targets)` followed by `(loss * scale).backward()`.
    """
    batch, seq = idx.shape
    cfg = model.config
    channels, heads = cfg.n_embd, cfg.n_head
    rows, head_dim = batch * seq, channels // cfg.n_head
    tr = model.transformer
    wte, wpe = tr.wte.weight, tr.wpe.weight
    flat = idx.reshape(-1)
    saved: list[_Saved] = []
    x, blocks = _forward(model, idx, products, saved)
    hf, stats_f, logp = _head(model, x, products)
    flat_targets = targets.reshape(-1)
    loss = F.nll_loss(logp, flat_targets)

    # d(mean cross-entropy)/d(logits) = (softmax - onehot(target)) / rows
    dlogits = logp.exp_()
    dlogits.scatter_add_(1, flat_targets.view(-1, 1), torch.full((rows, 1), -1.0))
    dlogits.mul_(scale / rows)
    dwte = products.grad_weight(dlogits, hf).contiguous()
    dx = _layer_norm_backward(products.grad_input(dlogits, wte), x, stats_f, tr.ln_f.weight)
    del logp, dlogits, hf
    for block in reversed(blocks):  # each block's saved values are freed once it is done
        dx = _block_backward(block, saved.pop(), dx, products, (batch, seq, heads, head_dim))

    dwte.index_add_(0, flat, dx)
    _accumulate(wte, dwte)
    dwpe = torch.zeros_like(wpe)
    dwpe[:seq] = dx.view(batch, seq, channels).sum(0)
    _accumulate(wpe, dwpe)
    return loss * scale


def _block_backward(
    block: Block, s: _Saved, dx: Tensor, products: Products, shape: tuple[int, int, int, int]
) -> Tensor:
    """dx through one Block (residual stream in, residual stream out), accumulating its weights' grads."""
    batch, seq, heads, head_dim = shape
    rows, channels = dx.shape
    mlp, attn = block.mlp, block.attn
    _accumulate(mlp.c_proj.weight, products.grad_weight(dx, s.g))
    df = aten.gelu_backward(products.grad_input(dx, mlp.c_proj.weight), s.f)
    _accumulate(mlp.c_fc.weight, products.grad_weight(df, s.h2))
    dx = dx.add_(
        _layer_norm_backward(products.grad_input(df, mlp.c_fc.weight), s.x1, s.ln2, block.ln_2.weight)
    )

    y_rows = s.y.transpose(1, 2).reshape(rows, channels)
    _accumulate(attn.c_proj.weight, products.grad_weight(dx, y_rows))
    dy = products.grad_input(dx, attn.c_proj.weight).view(batch, seq, heads, head_dim).transpose(1, 2)
    dq, dk, dv = aten._scaled_dot_product_flash_attention_for_cpu_backward(dy, *s.qkv, s.y, s.lse, 0.0, True)
    dqkv = torch.stack([t.transpose(1, 2) for t in (dq, dk, dv)], dim=2).view(rows, 3 * channels)
    _accumulate(attn.c_attn.weight, products.grad_weight(dqkv, s.h1))
    return dx.add_(
        _layer_norm_backward(products.grad_input(dqkv, attn.c_attn.weight), s.x, s.ln1, block.ln_1.weight)
    )

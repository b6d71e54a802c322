"""Linear layers with their bias, GELU or residual add inside one oneDNN call, for CPU inference.

PyTorch's eager CPU ``F.linear`` first writes the broadcast bias into the output and then runs the matrix
product on top of it, and a GELU or a residual add after it is one more pass over the output each. On the
token-wise layers of a Swin block (qkv, projection, MLP) those passes cost as much as a third of the matrix
product itself. PyTorch ships fused kernels for exactly this, the oneDNN ``mkldnn::_linear_pointwise`` ops that
torch.compile's CPU backend emits, but eager modules never call them; ``linear`` does, when that is safe: CPU
inference (``cpu_inference``: CPU tensors, no autograd recording, as the ops have no backward, float32 or
bfloat16, no graph being traced or compiled, so ONNX export and torch.compile see plain ops) and the private ops
present and working (``fused_ops_work``, probed once per dtype). Everything else takes the public path,
``F.linear`` plus the activation or the residual add, which tests/accel/test_fused_linear.py holds the fused one
to (and forces, to check the fallback itself).
"""
from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.tracing import is_tracing

ACTIVATIONS = (None, "gelu")
# Row chunks of CPU inference: the widest intermediate of a chunk (qkv rows, the MLP's hidden rows) is at most
# this many values (6 MiB in float32). At Swin-T's stride-4 stage (16384 tokens at 512x512) whole-map
# intermediates are 20-25 MB: they miss the cache, and the largest allocation of a forward is mmap-ed and
# page-faulted afresh on every call (glibc's dynamic mmap threshold), measured at up to 25k page faults per
# forward. Chunks make the consumer read its input from cache and stay off fresh pages.
CHUNK_VALUES = 6 << 18
_FUSED_DTYPES = (torch.float32, torch.bfloat16)
# The row count oneDNN picks the weight layout for; measured alike from 64 to 4096 rows.
PACK_ROWS_HINT = 1024


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear`` would compute in: the autocast dtype inside a CPU autocast region."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def cpu_inference(x: torch.Tensor) -> bool:
    """Whether ``x`` flows through CPU inference, where densekit.accel's Swin fast paths apply: a CPU tensor, no
    autograd recording, float32 or bfloat16 compute and no graph being traced or compiled."""
    return (x.device.type == "cpu" and not torch.is_grad_enabled() and compute_dtype(x) in _FUSED_DTYPES
            and not is_tracing())


def chunk_rows(width: int) -> int:
    """Rows per chunk for an intermediate ``width`` values wide (at least 1)."""
    return max(1, CHUNK_VALUES // width)


@functools.cache
def fused_ops_work(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build has the private oneDNN linear ops and they compute ``F.linear`` in ``dtype``.

    Probed once per dtype (the result is cached): on a tiny layer, weight packing, the plain, GELU and
    residual-add forms must run and agree with the public ops. A build without oneDNN, a release that renamed
    the ops or a CPU that lacks the bfloat16 instructions oneDNN needs answers False, and ``linear`` then takes
    the public path.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    gen = torch.Generator().manual_seed(0)
    x, weight, bias, residual = (torch.randn(*shape, generator=gen).to(dtype) for shape in
                                 ((3, 16), (8, 16), (8,), (3, 8)))
    tol = 1e-4 if dtype == torch.float32 else 0.1
    try:
        # Autocast off: a first call under bfloat16 autocast would otherwise compare float32 ops with bfloat16 ones.
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            ops = torch.ops.mkldnn
            packed = ops._reorder_linear_weight(weight, PACK_ROWS_HINT)
            plain = F.linear(x, weight, bias)
            checks = [(ops._linear_pointwise(x, packed, bias, "none", [], "none"), plain),
                      (ops._linear_pointwise(x, packed, bias, "gelu", [], "none"), F.gelu(plain)),
                      (ops._linear_pointwise.binary(x, residual, packed, bias, "add"), residual + plain)]
            return all(got.shape == ref.shape and torch.allclose(got.float(), ref.float(), atol=tol, rtol=tol)
                       for got, ref in checks)
    except (AttributeError, RuntimeError):  # no such op (AttributeError), or it refuses this build / CPU
        return False


# Weights are packed once into oneDNN's blocked layout (``mkldnn._reorder_linear_weight``, as torch.compile's CPU
# freezing does) instead of being handed over plain, which makes oneDNN reorder them on every call: measured 2-7%
# off Swin-T's whole 512x512 forward in float32 and 5-12% under bfloat16 autocast, same results bit for bit. A
# packed tensor is opaque (it cannot be deep-copied or pickled), so the cache is kept off the layer, weakly keyed by
# it, and rebuilt when an in-place update (optimizer step, ``load_state_dict``, EMA) changes a parameter's version
# or storage. Writes through ``.data`` bypass the version counter: after such a write call
# ``clear_packed_weights()``. Parameters created under ``torch.inference_mode()`` have no version counter and
# are not packed. Cost: one packed copy of each weight (per dtype) while the layer lives.
_PACKED: weakref.WeakKeyDictionary[nn.Linear, dict] = weakref.WeakKeyDictionary()


def clear_packed_weights() -> None:
    """Drop every packed weight; the next fused call packs from the parameters' current values."""
    _PACKED.clear()


def _operands(layer: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``layer``'s weight packed for oneDNN and its bias, both in ``dtype`` (the autocast dtype under autocast)."""
    weight, bias = layer.weight, layer.bias
    if any(p is not None and p.is_inference() for p in (weight, bias)):
        # Parameters made under torch.inference_mode() have no version counter: in-place updates would go unseen,
        # so nothing is cached (plain weights, oneDNN reorders them per call).
        return weight.to(dtype), None if bias is None else bias.to(dtype)
    key = tuple((p._version, p.data_ptr()) if p is not None else None for p in (weight, bias))
    per_layer = _PACKED.setdefault(layer, {})
    cached = per_layer.get(dtype)
    if cached is None or cached[0] != key:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), PACK_ROWS_HINT)
        cached = per_layer[dtype] = (key, packed, None if bias is None else bias.detach().to(dtype))
    return cached[1], cached[2]


def linear(x: torch.Tensor, layer: nn.Linear, activation: str | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``activation(layer(x))``, or ``residual + layer(x)``: one fused oneDNN call in CPU inference, the public
    ops elsewhere.

    Args:
        x: ``(..., in_features)``.
        layer: the ``nn.Linear`` whose weight and bias are used.
        activation: None or ``'gelu'`` (exact, erf form, as ``nn.GELU()``).
        residual: ``(..., out_features)`` added to the output; not together with an activation.

    Returns:
        ``(..., out_features)``; under CPU bfloat16 autocast, bfloat16 like ``F.linear``'s output (with a
        residual: the residual's dtype, as ``residual + F.linear(x)`` would give).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation is not None and residual is not None:
        raise ValueError("linear fuses an activation or a residual add, not both")
    dtype = compute_dtype(x)
    if not (cpu_inference(x) and fused_ops_work(dtype)):
        y = F.linear(x, layer.weight, layer.bias)
        if activation == "gelu":
            y = F.gelu(y)
        return y if residual is None else residual + y
    weight, bias = _operands(layer, dtype)
    flat = x.to(dtype).reshape(-1, x.shape[-1])
    out_shape = (*x.shape[:-1], weight.shape[0])
    if residual is not None and residual.dtype == dtype:
        y = torch.ops.mkldnn._linear_pointwise.binary(flat, residual.reshape(-1, weight.shape[0]), weight, bias,
                                                      "add")
        return y.view(out_shape)
    y = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, activation or "none", [], "none")
    y = y.view(out_shape)
    # A float32 residual under autocast stays float32 (type promotion), as in the plain path.
    return y if residual is None else residual + y

"""Linear layers with their bias, GELU or residual add inside one oneDNN call, for CPU inference.

PyTorch's eager CPU ``F.linear`` first writes the broadcast bias into the output and then runs the matrix
product on top of it, and a GELU or a residual add after it is one more pass over the output each. On the
token-wise layers of a Swin block (qkv, projection, MLP) those passes cost as much as a third of the matrix
product itself. PyTorch ships fused kernels for exactly this, the oneDNN ``mkldnn::_linear_pointwise`` ops that
torch.compile's CPU backend emits, but eager modules never call them; ``linear`` does, when that is safe: CPU
tensors, no autograd recording (the ops have no backward), float32 or bfloat16, PyTorch built with oneDNN and
no graph being traced or compiled (ONNX export and torch.compile see plain ops). Everything else takes the plain
path, which tests/layers/test_fused_linear.py holds the fused one to.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import is_tracing

ACTIVATIONS = (None, "gelu")
# Row chunks of CPU inference: the widest intermediate of a chunk (qkv rows, the MLP's hidden rows) is at most
# this many values (6 MiB in float32). At Swin-T's stride-4 stage (16384 tokens at 512x512) whole-map
# intermediates are 20-25 MB: they miss the cache, and the largest allocation of a forward is mmap-ed and
# page-faulted afresh on every call (glibc's dynamic mmap threshold), measured at up to 25k page faults per
# forward. Chunks make the consumer read its input from cache and stay off fresh pages.
CHUNK_VALUES = 6 << 18
_FUSED_DTYPES = (torch.float32, torch.bfloat16)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear`` would compute in: the autocast dtype inside a CPU autocast region."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def fused_linear_available(x: torch.Tensor) -> bool:
    """Whether ``linear`` takes the fused oneDNN path for input ``x``."""
    return (x.device.type == "cpu" and not torch.is_grad_enabled() and torch.backends.mkldnn.is_available()
            and _compute_dtype(x) in _FUSED_DTYPES and not is_tracing())


def chunk_rows(width: int) -> int:
    """Rows per chunk for an intermediate ``width`` values wide (at least 1)."""
    return max(1, CHUNK_VALUES // width)


# Weights are packed once into oneDNN's blocked layout (``mkldnn._reorder_linear_weight``, as torch.compile's CPU
# freezing does) instead of being handed over plain, which makes oneDNN reorder them on every call: measured 2-7%
# off Swin-T's whole 512x512 forward in float32 and 5-12% under bfloat16 autocast, same results bit for bit. A
# packed tensor is opaque (it cannot be deep-copied or pickled), so the cache is kept off the layer, weakly keyed by
# it, and rebuilt when an in-place update (optimizer step, ``load_state_dict``, EMA) changes a parameter's version
# or storage. Writes through ``.data`` bypass the version counter: after such a write call
# ``clear_packed_weights()``. Parameters created under ``torch.inference_mode()`` have no version counter and
# are not packed. Cost: one packed copy of each weight (per dtype) while the layer lives.
_PACKED: weakref.WeakKeyDictionary[nn.Linear, dict] = weakref.WeakKeyDictionary()
# The row count oneDNN picks the weight layout for; measured alike from 64 to 4096 rows.
PACK_ROWS_HINT = 1024


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
    """``activation(layer(x))``, or ``residual + layer(x)``.

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
    if not fused_linear_available(x):
        y = F.linear(x, layer.weight, layer.bias)
        if activation == "gelu":
            y = F.gelu(y)
        return y if residual is None else residual + y
    dtype = _compute_dtype(x)
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

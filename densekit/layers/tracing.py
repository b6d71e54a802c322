"""Whether a graph is being recorded, which changes what layers may cache or branch on."""
from __future__ import annotations

import torch


def is_tracing() -> bool:
    """True while torch.export / torch.compile / jit trace records a graph (ONNX export goes through these):
    sizes may then be symbolic (unhashable, so no cache lookup) and a cached tensor would enter the graph as a
    constant of one input size."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()

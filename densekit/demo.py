"""The quickstart job: build backbones, run them on an embedded image, print feature shapes and timings.

Runs offline on any machine (random weights, a generated image); the UPerNet training demo
replaces it once segmentation lands.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from .backbones import create_backbone

DEFAULT_BACKBONES = ("swin_t", "convnext_tiny", "resnet50")


def demo_image(height: int = 512, width: int = 512, seed: int = 0) -> torch.Tensor:
    """A deterministic, normalised ``(1, 3, H, W)`` test picture: smooth gradients plus a few discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width, yy / height, 0.5 * (xx + yy) / (width + height)])
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 80)
        image[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, size=(3, 1))
    return torch.from_numpy((image - 0.45) / 0.25).unsqueeze(0)


def run_backbone_demo(names: tuple[str, ...] = DEFAULT_BACKBONES, size: tuple[int, int] = (512, 512),
                      runs: int = 3) -> list[dict]:
    """Forward each backbone on the demo image; print and return shapes and median latency (ms)."""
    image = demo_image(*size)
    print(f"densekit backbone demo: input {tuple(image.shape)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = []
    for name in names:
        model = create_backbone(name).eval()
        times = []
        with torch.inference_mode():
            feats = model(image)  # warm-up
            for _ in range(runs):
                start = time.perf_counter()
                feats = model(image)
                times.append(1000 * (time.perf_counter() - start))
        shapes = [tuple(f.shape) for f in feats]
        row = {"name": name, "shapes": shapes, "strides": model.strides, "ms": statistics.median(times)}
        print(f"  {name:<14} {row['ms']:8.1f} ms  strides {model.strides}  " + "  ".join(map(str, shapes)))
        results.append(row)
    return results

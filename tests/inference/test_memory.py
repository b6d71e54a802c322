"""Steady memory: segmenting a folder of 300 images with the demo model (``init_model`` + ``inference_model`` +
``write_image``, the loop of ``tools/infer.py``) holds the process's resident memory flat after a warm-up.

The first images fill what is meant to stay (allocator arenas, the attention-mask caches of the five image
sizes used, oneDNN primitives); after image 20 nothing should grow. The bound, 16 MB over 280 images, is
what a leak of ~60 KB per image would exceed: one retained 6-class logit map of a 256x256 image is 1.5 MB, a
retained input 0.8 MB, so any per-image reference that outlives its iteration fails the test many times
over, while allocator noise (measured: a few MB) stays below it."""
from __future__ import annotations

import os
import time

import cv2
import pytest
import torch

from densekit.apis import build_model, inference_model, init_model, load_config
from densekit.datasets.seg.demo import make_demo_scene
from densekit.engine.demo import DEMO_CONFIG
from densekit.visualization import write_image

NUM_IMAGES = 300
WARMUP = 20
MAX_GROWTH_MB = 16
SIZES = [(256, 256), (240, 320), (192, 160), (224, 288), (128, 200)]  # a folder of a few camera resolutions


def rss_mb() -> float:
    """Resident set size of this process, from ``/proc/self/statm`` (pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc for the RSS")
def test_inference_over_300_images_keeps_memory_flat(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(NUM_IMAGES):
        image, _ = make_demo_scene(seed=0, split=1, index=i, size=SIZES[i % len(SIZES)])
        cv2.imwrite(str(images / f"{i:04d}.jpg"), image)
    cfg = load_config(str(DEMO_CONFIG))
    checkpoint = tmp_path / "random_init.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": build_model(cfg, pretrained=False).state_dict(), "meta": {}}, checkpoint)
    model = init_model(str(DEMO_CONFIG), str(checkpoint))

    out_dir, rss = tmp_path / "preds", []
    start = time.perf_counter()
    for path in sorted(images.glob("*.jpg")):
        pred = inference_model(model, path).pred_sem_seg.data[0].cpu().numpy()
        write_image(out_dir / f"{path.stem}_mask.png", pred.astype("uint8"))
        rss.append(rss_mb())
    seconds = time.perf_counter() - start
    growth = max(rss[WARMUP:]) - rss[WARMUP - 1]
    print(f"\n{NUM_IMAGES} images in {seconds:.0f} s; RSS after image 1: {rss[0]:.0f} MB, after {WARMUP}: "
          f"{rss[WARMUP - 1]:.0f} MB, after {NUM_IMAGES}: {rss[-1]:.0f} MB, max after warm-up: "
          f"{max(rss[WARMUP:]):.0f} MB (growth {growth:+.1f} MB); every 50: "
          + ", ".join(f"{r:.0f}" for r in rss[::50]))
    assert len(list(out_dir.glob("*_mask.png"))) == NUM_IMAGES
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.1f} MB after the first {WARMUP} images (bound {MAX_GROWTH_MB})"

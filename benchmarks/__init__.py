"""Peer benchmark suites: densekit against HF transformers, timm, torchvision and the official Swin-Unet loop.

Development tooling beside the package, run from a checkout: ``python -m benchmarks --suite swin_t_backbone``.
"""

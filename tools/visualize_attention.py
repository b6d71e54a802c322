"""Swin window-attention heat maps over an image; same as ``densekit visualize-attention`` (see its --help).

Example:
    python tools/visualize_attention.py configs/upernet_swin_t_demo.py ckpt.pth photo.png --stage 2 --block 1 \
        --query 120 64 --out attn.png
"""
from densekit.cli.common import run_tool
from densekit.cli.visualize_attention import main

if __name__ == "__main__":
    run_tool(main)

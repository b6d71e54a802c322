"""Loss / metric curves and the per-class IoU chart of a work dir; same as ``densekit plot`` (see its --help).

Example:
    python tools/plot.py work_dirs/demo
"""
from densekit.cli.common import run_tool
from densekit.cli.plot import main

if __name__ == "__main__":
    run_tool(main)

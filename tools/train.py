"""Same as ``densekit train`` (densekit/cli/train.py); ``--help`` lists its arguments and examples."""
from densekit.cli.common import run_tool
from densekit.cli.train import main

if __name__ == "__main__":
    run_tool(main)

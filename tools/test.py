"""Same as ``densekit test`` (densekit/cli/test.py); ``--help`` lists its arguments and examples."""
from densekit.cli.common import run_tool
from densekit.cli.test import main

if __name__ == "__main__":
    run_tool(main)

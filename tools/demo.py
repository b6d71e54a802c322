"""Same as ``densekit demo`` (densekit/cli/demo.py); ``--help`` lists its arguments and examples."""
from densekit.cli.common import run_tool
from densekit.cli.demo import main

if __name__ == "__main__":
    run_tool(main)

"""Same as ``densekit export`` (densekit/cli/export.py); ``--help`` lists its arguments and examples."""
from densekit.cli.common import run_tool
from densekit.cli.export import main

if __name__ == "__main__":
    run_tool(main)

"""Same as ``densekit test`` (densekit/commands/test.py); ``--help`` lists its arguments and examples."""
from densekit.cli import run_tool
from densekit.commands.test import main

if __name__ == "__main__":
    run_tool(main)

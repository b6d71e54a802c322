"""Same as ``densekit export`` (densekit/commands/export.py); ``--help`` lists its arguments and examples."""
from densekit.cli import run_tool
from densekit.commands.export import main

if __name__ == "__main__":
    run_tool(main)

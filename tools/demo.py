"""Same as ``densekit demo`` (densekit/commands/demo.py); ``--help`` lists its arguments and examples."""
from densekit.cli import run_tool
from densekit.commands.demo import main

if __name__ == "__main__":
    run_tool(main)

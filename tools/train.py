"""Same as ``densekit train`` (densekit/commands/train.py); ``--help`` lists its arguments and examples."""
from densekit.cli import run_tool
from densekit.commands.train import main

if __name__ == "__main__":
    run_tool(main)

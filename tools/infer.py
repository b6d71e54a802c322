"""Same as ``densekit infer`` (densekit/commands/infer.py); ``--help`` lists its arguments and examples."""
from densekit.cli import run_tool
from densekit.commands.infer import main

if __name__ == "__main__":
    run_tool(main)

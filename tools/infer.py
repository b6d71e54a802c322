"""Same as ``densekit infer`` (densekit/cli/infer.py); ``--help`` lists its arguments and examples."""
from densekit.cli.common import run_tool
from densekit.cli.infer import main

if __name__ == "__main__":
    run_tool(main)

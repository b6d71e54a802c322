"""Same as ``densekit benchmark`` (densekit/cli/benchmark.py): measure a config's model; ``--help`` lists its
arguments and examples. The peer comparisons run with ``python -m benchmarks`` from a checkout."""
from densekit.cli.benchmark import main, parse_args  # noqa: F401  (parse_args: for code that loads the script)
from densekit.cli.common import run_tool

if __name__ == "__main__":
    run_tool(main)

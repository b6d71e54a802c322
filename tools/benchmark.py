"""Same as ``densekit benchmark`` (densekit/cli/benchmark.py); ``--help`` lists its arguments and examples."""
from densekit.cli.benchmark import main, parse_args  # noqa: F401  (parse_args: for code that loads the script)

if __name__ == "__main__":
    main()

"""Same as ``densekit benchmark`` (densekit/commands/benchmark.py); ``--help`` lists its arguments and examples."""
from densekit.commands.benchmark import main

if __name__ == "__main__":
    main()

"""Same as ``densekit convert`` (densekit/cli/convert.py); ``--help`` lists its arguments and examples."""
import sys

from densekit.cli.convert import main, parse_args  # noqa: F401  (parse_args: for code that loads the script)

if __name__ == "__main__":
    sys.exit(main())

"""Same as ``densekit convert`` (densekit/commands/convert.py); ``--help`` lists its arguments and examples."""
import sys

from densekit.commands.convert import main

if __name__ == "__main__":
    sys.exit(main())

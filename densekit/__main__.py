"""``python -m densekit``: the ``densekit`` command without the installed entry point."""
import sys

from densekit.cli import main

sys.exit(main())

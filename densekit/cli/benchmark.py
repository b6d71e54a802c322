"""Placeholder while the package is reorganised: the peer suites run from a checkout."""
from benchmarks.run import main, parse_args  # noqa: F401

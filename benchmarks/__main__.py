"""``python -m benchmarks``: the peer suites (see ``benchmarks/run.py``)."""
from .run import main

main()

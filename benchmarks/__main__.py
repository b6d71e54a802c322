"""``python -m benchmarks``: the peer suites (see ``benchmarks/run.py``)."""
from .run import main

if __name__ == "__main__":
    main()

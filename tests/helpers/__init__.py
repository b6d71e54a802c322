"""One copy of each helper the tests share: the ``../shared`` data path (paths.py), the seconds-long demo
configs and the logged-loss reader (demo.py), the toy NaN-loss run (toy_runs.py), the tools loaded as modules
(tools.py). Fixtures (``no_network``) live in tests/conftest.py. The reference implementations the tests compare
against stay in their own modules beside conftest.py (``hf_upernet_reference`` and the others)."""

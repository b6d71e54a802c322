"""Test-wide setup: this folder is on sys.path (pytest's rootdir conftest), so tests in subfolders import the shared
helper modules beside this file (``hf_upernet_reference``, ``mode_stubs``, ``tiny_train``)."""

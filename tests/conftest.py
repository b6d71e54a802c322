"""Test-wide setup: this folder is on sys.path (pytest's rootdir conftest), so tests in subfolders import the shared
helper modules beside this file (``hf_upernet_reference``, ``mode_stubs``, ``tiny_train``, ``swin2mmseg_reference``,
``swin_unet_reference``).

``swin_checkpoints`` holds the session fixtures of one random Swin-T in every checkpoint layout, used by the
converters' tests (tests/convert) and the loaders' (tests/backbones, tests/inference)."""

pytest_plugins = ["swin_checkpoints"]

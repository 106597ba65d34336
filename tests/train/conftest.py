"""The train tests use `tiny_data` (tests/conftest.py) and `tiny_setup.tiny_config`."""

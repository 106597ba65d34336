"""The train tests use `tiny_data` (tests/conftest.py) and `tiny_setup.tiny_config`.

`tiny_config` / `TINY` are re-exported here for older `from conftest import tiny_config` lines;
that import depends on which conftest pytest registered last, so new code imports them from
`tiny_setup`."""

from tiny_setup import TINY, tiny_config  # noqa: F401

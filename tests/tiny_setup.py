"""The tiny_test config (configs/tiny_test.yaml: 6 synthetic training scenes, cpu-demo model, a
few steps per stage; seconds on 2 cores) for tests: `from tiny_setup import tiny_config`.
Its prepared data is the session fixture `tiny_data` (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny_test.yaml"


def tiny_config(*overrides: str):
    """The tiny_test TrainConfig with `key=value` overrides."""
    from smart_r1.train.config import load_config

    return load_config(TINY, list(overrides))

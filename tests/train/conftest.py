"""Shared fixture: the tiny_test config's data (synthetic scenes, vocabulary, tokens), built once."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny_test.yaml"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from smart_r1.train.config import load_config
    from smart_r1.train.pipeline import prepare_data

    out = tmp_path_factory.mktemp("tiny_data")
    cfg = load_config(TINY)
    return prepare_data(cfg, out)


def tiny_config(*overrides: str):
    from smart_r1.train.config import load_config

    return load_config(TINY, list(overrides))

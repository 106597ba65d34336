"""`Checkpoint`: everything needed to continue a training run exactly where it stopped.

Saved atomically (write to a temporary file in the same directory, fsync, `os.replace`), so a
run killed mid-save leaves the previous checkpoint intact. Contents: model / optimizer /
scheduler state, objective state (calibrated alpha, PPO value head), the frozen reference
model of an RFT stage, RNG states (python, numpy, torch CPU [+ CUDA]), the vocabulary id and
directory, the resolved config, stage index, step within the stage, finished flag, the
metric history and the MLflow run id.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smart_r1.errors import CheckpointError

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Checkpoint:
    model: dict  # state_dict
    config: dict  # resolved TrainConfig as a dict
    stage_index: int  # stage being trained (or the last one, when finished)
    stage_name: str
    step: int  # optimiser steps done in this stage
    stage_done: bool = False  # the stage at stage_index completed
    optimizer: dict | None = None
    scheduler: dict | None = None
    objective: dict = field(default_factory=dict)
    reference_model: dict | None = None  # RFT stages: frozen reference policy
    rng: dict = field(default_factory=rng_state)
    vocab_id: str | None = None
    vocab_dir: str | None = None
    model_config: dict | None = None
    mlflow_run_id: str | None = None
    history: list = field(default_factory=list)  # [{stage, step, metrics...}]
    evaluations: dict = field(default_factory=dict)  # stage name -> eval metrics
    format_version: int = FORMAT_VERSION

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(asdict(self), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @staticmethod
    def load(path: str | Path, map_location: str | torch.device = "cpu") -> "Checkpoint":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
        try:
            data = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as err:  # truncated / foreign file
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {err}") from err
        if not isinstance(data, dict) or "model" not in data:
            raise CheckpointError(f"checkpoint {str(path)!r}: not a smart-r1 checkpoint (no 'model' field)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"checkpoint {str(path)!r}: format_version {version}, this code reads {FORMAT_VERSION}")
        known = set(Checkpoint.__dataclass_fields__)
        return Checkpoint(**{k: v for k, v in data.items() if k in known})


LAST = "last.pt"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def last_checkpoint(output_dir: str | Path) -> Path | None:
    p = checkpoint_dir(output_dir) / LAST
    return p if p.exists() else None


def save_checkpoint(ckpt: Checkpoint, output_dir: str | Path, also_as: str | None = None) -> Path:
    """Write `checkpoints/last.pt` (what --resume reads) and optionally a named copy
    (`checkpoints/<stage>.pt` at the end of each stage)."""
    d = checkpoint_dir(output_dir)
    path = ckpt.save(d / LAST)
    if also_as:
        ckpt.save(d / also_as)
    return path

"""Checkpoint -> simulated `Rollouts` for `Scene`s (used by `smart-r1 simulate` and evaluation).

`load_simulator(checkpoint)` reads a training checkpoint (`smart_r1.train.checkpoint.Checkpoint`
file, or a plain dict with keys `model_state` / `model`, `model_config`, `vocab_dir`), rebuilds
the `SmartModel`, loads the motion vocabulary and makes a `Tokenizer`. `simulate_scenes`
tokenizes each scene and runs the batched rollout engine (`sim.engine.rollout`, top-k sampling,
no CAT-K target search). Only the history and the current step of a scene are used: the
engine starts from anchor 2 (step 10) and never reads logged future tokens unless the `catk`
sampler is asked for.
"""

from __future__ import annotations

import functools
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from smart_r1.errors import CheckpointError
from smart_r1.sim.rollouts import Rollouts


@dataclass
class Simulator:
    model: torch.nn.Module
    vocab: object
    tokenizer: object
    source: str = ""


def _read_checkpoint(path: Path) -> dict:
    first_err = None
    try:
        from smart_r1.train.checkpoint import Checkpoint

        ck = Checkpoint.load(path)
        return {"model_state": ck.model, "model_config": ck.model_config, "vocab_dir": ck.vocab_dir}
    except ImportError:
        pass
    except Exception as err:  # not a Checkpoint file: try a plain dict below
        first_err = err
    try:
        d = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a PNG, a text file, a truncated file: not a checkpoint at all
        raise CheckpointError(f"checkpoint {path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(d, dict):
        raise CheckpointError(f"checkpoint {path}: not a checkpoint dict ({type(d).__name__}); {first_err or ''}")
    state = d.get("model_state", d.get("model"))
    return {"model_state": state, "model_config": d.get("model_config"), "vocab_dir": d.get("vocab_dir")}


def load_simulator(checkpoint: str | os.PathLike, device: str | torch.device = "cpu", vocab_dir: str | None = None) -> Simulator:
    from smart_r1.model.batch import vocab_sizes_of
    from smart_r1.model.presets import ModelConfig
    from smart_r1.model.smart import SmartModel
    from smart_r1.tokens.motion_vocab import MotionVocab
    from smart_r1.tokens.tokenizer import Tokenizer

    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    d = _read_checkpoint(path)
    for key in ("model_state", "model_config"):
        if d.get(key) is None:
            raise CheckpointError(f"checkpoint {path}: field {key} is missing")
    vdir = vocab_dir or d.get("vocab_dir")
    if not vdir:
        raise CheckpointError(f"checkpoint {path}: field vocab_dir is missing (pass vocab_dir=)")
    vpath = Path(vdir)
    if not vpath.exists() and (path.parent / vpath).exists():
        vpath = path.parent / vpath
    vocab = MotionVocab.load(vpath)
    model = SmartModel(ModelConfig.from_dict(dict(d["model_config"])), vocab_sizes_of(vocab))
    missing, unexpected = model.load_state_dict(d["model_state"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: field model_state does not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(device).eval()
    return Simulator(model=model, vocab=vocab, tokenizer=Tokenizer(vocab), source=str(path))


@functools.lru_cache(maxsize=4)
def _cached_simulator(path: str, mtime: float, device: str) -> Simulator:
    return load_simulator(path, device=device)


def scene_seed(seed: int, scenario_id: str) -> int:
    """Per-scene seed: stable across runs and machines."""
    return (int(seed) * 1_000_003 + zlib.crc32(str(scenario_id).encode())) % (2**62)


@torch.no_grad()
def simulate_tokenized(
    sim: Simulator,
    tokenized,
    num_rollouts: int = 32,
    seed: int = 0,
    sampler: str = "topk",
    top_k: int = 48,
    temperature: float = 1.0,
):
    """One tokenized scene -> `RolloutBatch`."""
    from smart_r1.model.batch import collate
    from smart_r1.sim.engine import rollout

    device = next(sim.model.parameters()).device
    batch = collate([tokenized], sim.vocab).to(device)
    kwargs = {} if sampler == "argmax" else {"k": int(top_k), "temperature": float(temperature)}
    return rollout(sim.model, batch, n_rollout=num_rollouts, sampler=sampler, seed=seed, sampler_kwargs=kwargs,
                   catk_target=False)


def simulate_scenes(
    checkpoint,
    scenes: Sequence,
    num_rollouts: int = 32,
    seed: int = 0,
    sampler: str = "topk",
    top_k: int = 48,
    temperature: float = 1.0,
    device: str = "cpu",
    progress: bool = False,
) -> list[Rollouts]:
    """`Rollouts` (R x sim agents x 80 x 4, agent ids = `scene.sim_agent_ids()`) per `Scene`.

    `checkpoint`: a path (loaded once and cached) or a `Simulator`. `seed` is used as given for a
    single scene; with several scenes each scene gets `scene_seed(seed, scenario_id)`.
    """
    if isinstance(checkpoint, Simulator):
        sim = checkpoint
    else:
        p = Path(checkpoint)
        sim = _cached_simulator(str(p.resolve()), p.stat().st_mtime if p.exists() else 0.0, str(device))
    out = []
    from tqdm import tqdm

    for scene in tqdm(scenes, desc="simulate", disable=not progress, unit="scene"):
        tok = sim.tokenizer.tokenize(scene)
        s = seed if len(scenes) == 1 else scene_seed(seed, scene.scenario_id)
        rb = simulate_tokenized(sim, tok, num_rollouts, s, sampler, top_k, temperature)
        ro = rb.to_rollouts(0)
        want = scene.sim_agent_ids()
        if not np.array_equal(ro.agent_id, want):
            raise ValueError(
                f"scene {scene.scenario_id!r}: simulated agent ids {ro.agent_id.tolist()[:10]} differ from the scene's "
                f"agents to simulate {want.tolist()[:10]} (tokenizer sim_mask)"
            )
        out.append(ro)
    return out


def load_policy(checkpoint: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """The `SmartModel` of a checkpoint (eval mode; cached like `simulate_scenes`)."""
    p = Path(checkpoint)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} not found")
    return _cached_simulator(str(p.resolve()), p.stat().st_mtime, str(device)).model

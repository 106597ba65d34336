"""Versioned weight broadcast through the Ray object store.

The learner converts its policy's `state_dict` to numpy once per update, `ray.put`s it (one
copy in the object store, read zero-copy by every actor on the node) and publishes
`(version, ref)` to the `WeightStore` actor. Rollout actors ask the store for the newest
version before each task and load the weights only when the version changed.
"""

from __future__ import annotations

import time

import numpy as np
import ray


def state_to_numpy(module) -> dict[str, np.ndarray]:
    """CPU numpy copy of a module's state (no autograd graph, picklable, zero-copy in Ray)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_numpy_state(module, state: dict[str, np.ndarray]) -> None:
    import torch

    device = next(iter(module.parameters())).device if any(True for _ in module.parameters()) else "cpu"
    module.load_state_dict({k: torch.as_tensor(np.array(v)).to(device) for k, v in state.items()})


@ray.remote(num_cpus=0, max_restarts=-1)
class WeightStore:
    """Holds the newest `(version, [ObjectRef])`. The ref is wrapped in a list so Ray passes
    the reference, not the value, through this actor."""

    def __init__(self):
        self._version = -1
        self._refs: list = []
        self._published_at = 0.0

    def publish(self, version: int, refs: list) -> int:
        if version > self._version:
            self._version, self._refs, self._published_at = int(version), refs, time.time()
        return self._version

    def publish_value(self, version: int, state: dict) -> int:
        """Publish weights sent by value: the store owns the object, so it outlives the sender
        (Ray Train workers exit at the end of `fit`)."""
        if version > self._version:
            return self.publish(version, [ray.put(state)])
        return self._version

    def latest(self) -> tuple[int, list, float]:
        return self._version, self._refs, self._published_at

    def version(self) -> int:
        return self._version

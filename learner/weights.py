"""Versioned weight broadcast through the Ray object store.

The learner converts its policy's `state_dict` to numpy once per update, `ray.put`s it (one
copy in the object store, read zero-copy by every actor on the node) and publishes
`(version, ref)` to the `WeightStore` actor. Rollout actors ask the store for the newest
version before each task and load the weights only when the version changed.

RL stages with a reference model (`learner.reference_on: rollout`) also publish the frozen
reference's weights, once per stage (the stage-start snapshot), in a second slot of the same
store (`publish_reference` / `latest_reference`, its own version counter); rollout actors keep a
second model replica for it and load it when a task names a newer reference version.
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
        self._reference_version = -1
        self._reference_refs: list = []

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

    def publish_reference(self, version: int, refs: list) -> int:
        """The frozen reference model's weights (`[ObjectRef]` of the numpy state), newest version wins."""
        if version > self._reference_version:
            self._reference_version, self._reference_refs = int(version), refs
        return self._reference_version

    def latest_reference(self) -> tuple[int, list]:
        return self._reference_version, self._reference_refs

"""Rollout actor: a model replica that simulates batches of scenes x rollouts.

Before each task it asks the `WeightStore` for the newest version and loads those weights if
they are newer than its own (a restarted actor starts at version -1, so it is re-sent the
current weights on its first task). Returns a compact numpy `RolloutResult`.
"""

from __future__ import annotations

import os
import time

import ray

from rollout_workers.workload import BadScene, RolloutResult, build_workload


class RolloutWorker:
    """Plain class (also usable without Ray); `RolloutActor` is its Ray actor."""

    def __init__(self, workload_spec, weight_store=None, name: str = "rollout", torch_threads: int = 1, device: str | None = None):
        import torch

        torch.set_num_threads(max(1, int(torch_threads)))
        self.name = name
        self.workload = build_workload(workload_spec)
        self.policy = self.workload.make_policy()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.policy.to(self.device).eval()
        if isinstance(weight_store, str):  # a named WeightStore: no actor handle as constructor argument (ray#53727)
            weight_store = ray.get_actor(weight_store)
        self.weight_store = weight_store
        self.version = -1
        self.n_weight_loads = 0
        self.weight_load_seconds = 0.0
        self.wait_seconds = 0.0

    def sync_weights(self, min_version: int = -1, max_wait: float = 600.0) -> int:
        """Load the newest published weights; first wait (bounded) until version >= min_version."""
        if self.weight_store is None:
            return self.version
        from learner.weights import load_numpy_state

        deadline = time.monotonic() + max_wait
        version, refs, _ = ray.get(self.weight_store.latest.remote())
        while version < min_version and time.monotonic() < deadline:
            time.sleep(0.005)
            version, refs, _ = ray.get(self.weight_store.latest.remote())
        if version > self.version and refs:
            t0 = time.perf_counter()
            load_numpy_state(self.policy, ray.get(refs[0]))
            self.weight_load_seconds += time.perf_counter() - t0
            self.version = version
            self.n_weight_loads += 1
        return self.version

    def rollout(self, work_id: int, scene_ids: list[str], seed: int, min_version: int = -1) -> RolloutResult:
        """Simulate these scenes with weights of version >= min_version (the driver's policy-lag gate)."""
        tw = time.perf_counter()
        self.sync_weights(min_version)
        t0 = time.perf_counter()
        self.wait_seconds += t0 - tw
        inputs, bad = self._load(scene_ids)
        ids, payload, scoring = ([], {}, {}) if inputs is None else self.workload.rollout(self.policy, inputs, seed)
        return RolloutResult(
            work_id=work_id, scene_ids=list(ids), policy_version=self.version, payload=payload, scoring=scoring,
            bad=bad, seconds=time.perf_counter() - t0, n_rollout=int(getattr(self.workload, "n_rollout", 1)),
            actor=f"{self.name}:{os.getpid()}",
        )

    def _load(self, scene_ids):
        """Inputs of the good scenes; a bad scene is isolated by retrying one by one."""
        try:
            inputs, bad = self.workload.load_inputs(scene_ids)
            return inputs, dict(bad)
        except BadScene:
            pass
        good, bad = [], {}
        for sid in scene_ids:
            try:
                self.workload.load_inputs([sid])
                good.append(sid)
            except BadScene as err:
                bad[sid] = err.reason
        if not good:
            return None, bad
        inputs, more_bad = self.workload.load_inputs(good)
        bad.update(more_bad)
        return inputs, bad

    def weights(self) -> dict:
        """The replica's current policy weights as numpy arrays (what it rolls out with)."""
        from learner.weights import state_to_numpy

        return state_to_numpy(self.policy)

    def info(self) -> dict:
        return {"pid": os.getpid(), "version": self.version, "weight_loads": self.n_weight_loads, "wait_seconds": self.wait_seconds,
                "weight_load_seconds": self.weight_load_seconds, "rss_bytes": _rss(), "cpu_seconds": _cpu()}


def _cpu() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


RolloutActor = ray.remote(RolloutWorker)

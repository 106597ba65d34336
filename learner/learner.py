"""The learner: applies the workload's (i.e. the registered objective's) update, publishes
weights once per update with a version, and enforces the policy-lag bound.

`LearnerCore` is plain Python (used by the `Learner` actor and by every Ray Train worker of
the data-parallel entry, `learner.train_dp`): one code path for the update.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray

from rollout_workers.workload import RolloutResult, build_workload


def lag_ok(learner_version: int, data_version: int, max_policy_lag: int) -> bool:
    """Data sampled with weights `data_version` may update a learner at `learner_version`
    when `learner_version - data_version <= max_policy_lag` (0 = strictly on-policy)."""
    return learner_version - data_version <= max_policy_lag


class LearnerCore:
    def __init__(self, workload_spec, device: str | None = None, torch_threads: int = 1):
        import torch

        torch.set_num_threads(max(1, int(torch_threads)))
        self.workload = build_workload(workload_spec)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.policy = self.workload.make_policy().to(self.device)
        self.state = self.workload.make_learner(self.policy)
        self.version = 0
        self.n_updates = 0

    def apply(self, result: RolloutResult, rewards) -> dict[str, float]:
        metrics = self.workload.update(self.state, self.policy, result, rewards)
        self.version += 1
        self.n_updates += 1
        return metrics

    def weights(self):
        from learner.weights import state_to_numpy

        return state_to_numpy(self.policy)

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "learner": self.workload.learner_state_dict(self.state),
            "version": self.version,
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.workload.load_learner_state_dict(self.state, state["learner"])
        self.version = int(state["version"])
        self.n_updates = int(state["n_updates"])


class LearnerWorker:
    """Single-process learner (the `Learner` Ray actor)."""

    def __init__(self, workload_spec, weight_store, max_policy_lag: int = 1, device: str | None = None, torch_threads: int = 1):
        self.core = LearnerCore(workload_spec, device=device, torch_threads=torch_threads)
        self.weight_store = weight_store
        self.max_policy_lag = int(max_policy_lag)
        self.n_dropped = 0
        self.n_dropped_scenes = 0
        self.busy_seconds = 0.0
        self.first_update_at: float | None = None
        self.last_update_end = 0.0
        self.publish_seconds: list[float] = []
        self.publish()

    @property
    def version(self) -> int:
        return self.core.version

    def publish(self) -> int:
        """Put the weights in the object store once and announce (version, ref)."""
        t0 = time.perf_counter()
        ref = ray.put(self.core.weights())
        ray.get(self.weight_store.publish.remote(self.core.version, [ref]))
        self.publish_seconds.append(time.perf_counter() - t0)
        return self.core.version

    def update(self, result: RolloutResult, rewards) -> dict:
        lag = self.core.version - result.policy_version
        if not lag_ok(self.core.version, result.policy_version, self.max_policy_lag):
            self.n_dropped += 1
            self.n_dropped_scenes += len(result.scene_ids)
            return {"dropped": True, "policy_lag": lag, "version": self.core.version, "work_id": result.work_id}
        t0 = time.perf_counter()
        if self.first_update_at is None:
            self.first_update_at = time.time()
        metrics = self.core.apply(result, rewards)
        self.publish()
        dt = time.perf_counter() - t0
        self.busy_seconds += dt
        self.last_update_end = time.time()
        return {"dropped": False, "policy_lag": lag, "version": self.core.version, "work_id": result.work_id,
                "update_seconds": dt, "metrics": metrics}

    def stats(self) -> dict:
        import psutil

        span = (self.last_update_end - self.first_update_at) if self.first_update_at else 0.0
        return {
            "version": self.core.version, "n_updates": self.core.n_updates, "n_dropped": self.n_dropped,
            "n_dropped_scenes": self.n_dropped_scenes, "busy_seconds": self.busy_seconds, "span_seconds": span,
            "idle_fraction": (1.0 - self.busy_seconds / span) if span > 0 else float("nan"),
            "publish_seconds_mean": sum(self.publish_seconds) / max(1, len(self.publish_seconds)),
            "pid": os.getpid(), "rss_bytes": int(psutil.Process().memory_info().rss),
        }

    def reset_timing(self) -> None:
        self.busy_seconds, self.first_update_at, self.last_update_end = 0.0, None, 0.0

    def save(self, path: str, extra: dict | None = None) -> str:
        import torch

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        state = self.core.state_dict()
        state["runtime"] = {"n_dropped": self.n_dropped, **(extra or {})}
        tmp = f"{path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load(self, path: str) -> dict:
        import torch

        state = torch.load(path, map_location=self.core.device, weights_only=False)
        self.core.load_state_dict(state)
        self.n_dropped = int(state.get("runtime", {}).get("n_dropped", 0))
        self.publish()
        return state.get("runtime", {})

    def get_weights(self):
        return self.core.weights()


Learner = ray.remote(LearnerWorker)

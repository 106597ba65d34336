"""Scorer actors: score one scene's rollouts as soon as they arrive (rewards + realism metrics).

The metric backend lives in the workload (`fast` by default; `official` runs TensorFlow in its
own worker subprocess, so TF never loads in the learner or the rollout actors). The pool size
comes from the runtime config (`runtime.num_scorers`).
"""

from __future__ import annotations

import os
import time

import ray

from rollout_workers.workload import ScoreResult, build_workload


class ScoreWorker:
    def __init__(self, workload_spec, name: str = "scorer", torch_threads: int = 1):
        import torch

        torch.set_num_threads(max(1, int(torch_threads)))
        self.name = name
        self.workload = build_workload(workload_spec)
        self.n_scored = 0

    def score(self, work_id: int, scene_id: str, payload) -> ScoreResult:
        t0 = time.perf_counter()
        reward, metrics = self.workload.score(scene_id, payload)
        self.n_scored += 1
        return ScoreResult(work_id=work_id, scene_id=scene_id, reward=reward, metrics=dict(metrics),
                           seconds=time.perf_counter() - t0, actor=f"{self.name}:{os.getpid()}")

    def info(self) -> dict:
        import psutil

        return {"pid": os.getpid(), "n_scored": self.n_scored, "rss_bytes": int(psutil.Process().memory_info().rss)}


ScorerActor = ray.remote(ScoreWorker)

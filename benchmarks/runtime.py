"""Distributed runtime benchmark: `python -m benchmarks.runtime [--quick] [--json out.json]`.

Measured on one private local Ray instance (address='local', 2 CPUs):

1. Rollout throughput (scene-rollouts/s) with 1 and 2 rollout actors, same run, same work:
   evaluation-mode epochs (rollout + scoring, no learner). Workload: `toy` (compute-bound MLP
   closed-loop policy, torch 1 thread per actor) and, when the simulator is importable,
   the SMART-R1 `cpu-demo` model on synthetic scenes is reported by the driver's own
   `runtime/scene_rollouts_per_second` metric instead.
2. RFT-loop throughput (scenes/s through rollout -> score -> update) and the bounding stage:
   per-stage busy time divided by its parallelism (rollout actors, scorers, 1 learner).
3. Weight-broadcast latency for the `tiny` preset (~7M params): learner publish (state ->
   numpy -> object store -> WeightStore) + actor pull (WeightStore lookup, object fetch,
   load_state_dict), median of N.
4. Learner idle fraction over the RFT loop (1 - busy / span).
5. Peak RSS per process type (driver, learner, rollout actor, scorer actor).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import psutil


def _init_ray():
    import tempfile

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, object_store_memory=300_000_000, include_dashboard=False,
             _temp_dir=tempfile.mkdtemp(prefix="srt_bench_", dir="/tmp"), log_to_driver=False)
    return ray


def rollout_scaling(spec: dict, n_scenes: int, scenes_per_task: int, repeats: int) -> dict:
    import ray

    from learner.runtime import DistributedRuntime

    out = {}
    ids = [f"scene{i}" for i in range(n_scenes)]
    for n_actor in (1, 2):
        rt = DistributedRuntime(spec, {"num_rollout_actors": n_actor, "num_scorers": 1, "rollout_cpus": 0.5,
                                       "scorer_cpus": 0.25, "learner_cpus": 0.25, "scenes_per_task": scenes_per_task,
                                       "max_inflight_rollouts_per_actor": 2, "max_buffered_batches": 8}, learner=False)
        try:
            rt.run_epoch(ids[: 2 * scenes_per_task * n_actor], epoch=0, learn=False)  # warm-up
            rates, cpu = [], []
            for r in range(repeats):
                c0 = sum(i["cpu_seconds"] for i in ray.get([a.info.remote() for a in rt.rollout_actors]))
                l0 = os.getloadavg()[0]
                rep = rt.run_epoch(ids, epoch=r + 1, learn=False)
                c1 = sum(i["cpu_seconds"] for i in ray.get([a.info.remote() for a in rt.rollout_actors]))
                n = len(rep.scores) * spec.get("n_rollout", 8)
                rates.append(n / rep.wall_seconds)
                cpu.append({"rollout_cpu_s": c1 - c0, "scene_rollouts_per_rollout_cpu_s": n / (c1 - c0),
                            "cpu_utilisation": (c1 - c0) / rep.wall_seconds, "loadavg_1m": l0})
            best = max(range(repeats), key=lambda i: rates[i])
            out[n_actor] = {"scene_rollouts_per_s": rates[best], "all": rates, **cpu[best]}
        finally:
            rt.shutdown()
    out["speedup"] = out[2]["scene_rollouts_per_s"] / out[1]["scene_rollouts_per_s"]
    # Rollout CPU obtained per wall second: how many cores the actors actually got.
    out["cpu_utilisation_ratio"] = out[2]["cpu_utilisation"] / out[1]["cpu_utilisation"]
    return out


def rft_loop(spec: dict, n_scenes: int, scenes_per_task: int, epochs: int, max_policy_lag: int) -> dict:
    import ray

    from learner.runtime import DistributedRuntime

    ids = [f"scene{i}" for i in range(n_scenes)]
    cfg = {"num_rollout_actors": 2, "num_scorers": 1, "rollout_cpus": 0.5, "scorer_cpus": 0.25, "learner_cpus": 0.5,
           "scenes_per_task": scenes_per_task, "max_policy_lag": max_policy_lag, "max_inflight_rollouts_per_actor": 1,
           "max_buffered_batches": 4}
    rt = DistributedRuntime(spec, cfg)
    try:
        rt.run_epoch(ids[: 4 * scenes_per_task], epoch=0)  # warm-up
        ray.get(rt.learner.reset_timing.remote())
        t0 = time.perf_counter()
        reps, rss = [], []
        for e in range(epochs):
            reps.append(rt.run_epoch(ids, epoch=e + 1))
            rss.append(psutil.Process().memory_info().rss / 2**20)  # driver RSS after each epoch
        wall = time.perf_counter() - t0
        stats = ray.get(rt.learner.stats.remote())
        info = rt.actor_info()
        n = sum(len(r.scores) for r in reps)
        busy = {
            "rollout (per actor)": sum(r.rollout_seconds for r in reps) / cfg["num_rollout_actors"],
            "scoring (per scorer)": sum(r.score_seconds for r in reps) / cfg["num_scorers"],
            "learner update": sum(r.update_seconds for r in reps),
        }
        return {
            "scenes_per_s": n / wall, "wall_s": wall, "scenes": n, "updates": sum(r.n_updates for r in reps),
            "dropped_batches": sum(r.n_dropped_batches for r in reps), "max_policy_lag": max_policy_lag,
            "stage_busy_s": busy, "bound_by": max(busy, key=busy.get),
            "learner_idle_fraction": stats["idle_fraction"],
            "rss_mb": {"learner": stats["rss_bytes"] / 2**20,
                       "rollout actor": max(i["rss_bytes"] for i in info["rollout"]) / 2**20,
                       "scorer actor": max(i["rss_bytes"] for i in info["scorer"]) / 2**20},
            "rollout_wait_s": sum(i.get("wait_seconds", 0.0) for i in info["rollout"]),
            "driver_rss_mb_per_epoch": rss,
            "object_store_used_mb": (ray.cluster_resources().get("object_store_memory", 0)
                                     - ray.available_resources().get("object_store_memory", 0)) / 2**20,
        }
    finally:
        rt.shutdown()


def broadcast_latency(n: int) -> dict:
    import ray

    from learner.weights import WeightStore
    from rollout_workers.rollout_actor import RolloutActor

    spec = {"name": "model_preset", "preset": "tiny"}
    store = WeightStore.remote()

    @ray.remote(num_cpus=0.5)
    class Publisher:
        def __init__(self, spec, store):
            from learner.weights import state_to_numpy
            from rollout_workers.workload import build_workload

            self.model = build_workload(spec).make_policy()
            self.store, self.version, self.to_numpy = store, 0, state_to_numpy

        def n_params(self):
            return sum(p.numel() for p in self.model.parameters())

        def publish(self):
            t0 = time.perf_counter()
            self.version += 1
            ref = ray.put(self.to_numpy(self.model))
            ray.get(self.store.publish.remote(self.version, [ref]))
            return self.version, time.perf_counter() - t0

    pub = Publisher.remote(spec, store)
    actor = RolloutActor.options(num_cpus=0.5).remote(spec, store, "bcast", 1, "cpu")
    n_params = ray.get(pub.n_params.remote())
    ray.get(actor.info.remote())
    pub_s, pull_s, total_s = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        v, dt_pub = ray.get(pub.publish.remote())
        t1 = time.perf_counter()
        got = ray.get(actor.sync_weights.remote(v))
        t2 = time.perf_counter()
        assert got == v
        pub_s.append(dt_pub)
        pull_s.append(t2 - t1)
        total_s.append(t2 - t0)
    for a in (pub, actor, store):
        ray.kill(a)
    return {"n_params": n_params, "mb": n_params * 4 / 2**20, "publish_ms": 1e3 * statistics.median(pub_s),
            "pull_and_load_ms": 1e3 * statistics.median(pull_s), "end_to_end_ms": 1e3 * statistics.median(total_s)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--only", choices=["scaling", "rft", "broadcast"], default=None)
    args = p.parse_args(argv)
    ray = _init_ray()
    q = args.quick
    heavy = {"name": "toy", "n_rollout": 32, "hidden": 512, "rollout_cost": 16 if not q else 2}
    rft = {"name": "toy", "n_rollout": 16, "hidden": 256, "rollout_cost": 8 if not q else 1}
    res = {"machine": f"{psutil.cpu_count()} CPUs (shared; other jobs running)", "torch_threads_per_actor": 1,
           "rollout_workload": heavy, "rft_workload": rft}
    try:
        if args.only in (None, "scaling"):
            res["rollout_scaling"] = rollout_scaling(heavy, 48 if not q else 16, 8 if not q else 4, 2 if not q else 1)
        if args.only in (None, "rft"):
            res["rft_loop"] = rft_loop(rft, 64 if not q else 16, 4, 8 if not q else 1, 1)
        if args.only in (None, "broadcast"):
            res["broadcast_tiny"] = broadcast_latency(10 if not q else 3)
        res["rss_mb_driver"] = psutil.Process().memory_info().rss / 2**20
    finally:
        ray.shutdown()
    print(json.dumps(res, indent=1, default=float))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

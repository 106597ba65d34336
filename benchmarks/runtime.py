"""Distributed runtime benchmark: `python -m benchmarks.runtime [--quick] [--workload smart|toy|all] [--json out.json]`.

Measured on one private local Ray instance (address='local', 2 CPUs).

`--workload smart` (the real SMART-R1 path, `learner.smart_collect`): the `cpu-demo` model
(configs/cpu_demo.yaml) on a small synthetic set prepared with
`smart_r1.train.pipeline.prepare_data`, MPO with the fast WOSAC backend:

a. rollout throughput with 1 and 2 rollout actors, same run, same batches:
   `DistributedCollector.collect` only (rollout + scoring, no update), scene-rollouts per wall
   second and per rollout-actor CPU second, and the 1-minute load average seen;
b. RFT-loop throughput (scenes/s through rollout -> score -> update: the library training loop
   with the distributed collector) in `mode: sync` vs `mode: async`, 2 rollout actors, with the
   busy seconds of each stage (rollout per actor, scoring per scorer, learner);
c. learner idle fraction = time the learner waits in `collect` / step time, sync vs async;
d. weight broadcast latency for the `tiny` preset (toy path, same WeightStore code);
e. peak RSS per process type (driver = learner, rollout actor, scorer actor).

`--workload toy` (the streaming `DistributedRuntime` with the toy workload), as before:

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
import dataclasses
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


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


@dataclasses.dataclass
class _EpochNumbers:
    n_scored: int
    rollout_seconds: float
    score_seconds: float
    update_seconds: float
    n_updates: int
    n_dropped_batches: int


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
            rep = rt.run_epoch(ids, epoch=e + 1)
            # keep only the numbers (keeping whole reports grew the driver ~0.3-0.4 MB/epoch)
            reps.append(_EpochNumbers(len(rep.scores), rep.rollout_seconds, rep.score_seconds, rep.update_seconds,
                                      rep.n_updates, rep.n_dropped_batches))
            del rep
            rss.append(psutil.Process().memory_info().rss / 2**20)  # driver RSS after each epoch
        wall = time.perf_counter() - t0
        stats = ray.get(rt.learner.stats.remote())
        info = rt.actor_info()
        n = sum(r.n_scored for r in reps)
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

    spec = {"name": "model_preset", "module": "benchmarks.toy_workload", "preset": "tiny"}
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


# ---------------------------------------------------------------------------------------------
# SMART-R1 workload (learner.smart_collect)
# ---------------------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def smart_setup(out: Path, n_scenes: int, batch_size: int, n_rollout: int, steps: int):
    """cpu-demo config on `n_scenes` synthetic train scenes, one MPO stage; (cfg, prepared data)."""
    from smart_r1.train.config import config_from_dict, load_yaml
    from smart_r1.train.pipeline import prepare_data

    raw = load_yaml(REPO / "configs/cpu_demo.yaml")
    raw["output_dir"] = str(out)
    raw["progress"] = False
    raw["data"]["synthetic"]["n_scenes"] = n_scenes
    raw["data"]["synthetic"]["n_val_scenes"] = 2
    raw["data"]["batch_size"] = batch_size
    raw["stages"] = [{"name": "rft", "objective": "mpo", "steps": steps, "lr": 5.0e-5,
                      "params": {"alpha": 0.5, "beta": 0.04, "n_rollout": n_rollout, "reward": "rollout"}}]
    raw["eval"]["after_each_stage"] = False
    raw["tracking"] = {"enabled": False}
    cfg = config_from_dict(raw, "benchmarks/runtime.py (cpu_demo.yaml, smart workload)")
    t0 = time.perf_counter()
    data = prepare_data(cfg, out)
    return cfg, data, time.perf_counter() - t0


def _rt(**kw):
    from learner.runtime import RuntimeConfig

    base = {"num_rollout_actors": 2, "num_scorers": 1, "rollout_cpus": 0.5, "scorer_cpus": 0.25, "torch_threads": 1}
    base.update(kw)
    return RuntimeConfig.from_dict(base)


def smart_rollout_scaling(cfg, data, n_rollout: int, repeats: int) -> dict:
    """Same batches collected with 1 then 2 rollout actors (collect only, no update)."""
    import torch

    from learner.smart_collect import DistributedCollector
    from smart_r1.objectives import get_objective
    from smart_r1.train.data import make_inputs
    from smart_r1.train.pipeline import build_model_for

    torch.set_num_threads(1)
    model = build_model_for(cfg, data.vocab).eval()
    bs = cfg.data.batch_size
    n = len(data.train)
    batches = [make_inputs(data.train, list(range(i, min(n, i + bs))), data.vocab, cfg.data.max_train_agents,
                           cfg.data.train_radius_m) for i in range(0, n, bs)]
    out = {}
    for n_actor in (1, 2):
        col = DistributedCollector(cfg, data.vocab, _rt(num_rollout_actors=n_actor))
        try:
            objective = get_objective("mpo", alpha=0.5, beta=0.04, n_rollout=n_rollout, reward="rollout")
            gen = torch.Generator().manual_seed(1)
            col.collect(objective, model, batches[0], gen)  # warm-up (imports, first weights load)
            runs = []
            for r in range(repeats):
                c0 = sum(i["cpu_seconds"] for i in col.actor_info()["rollout"])
                l0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                for b, inputs in enumerate(batches):
                    col.collect(objective, model, inputs, torch.Generator().manual_seed(100 * r + b))
                wall = time.perf_counter() - t0
                c1 = sum(i["cpu_seconds"] for i in col.actor_info()["rollout"])
                k = n * n_rollout
                runs.append({"scene_rollouts_per_s": k / wall, "wall_s": wall, "rollout_cpu_s": c1 - c0,
                             "scene_rollouts_per_rollout_cpu_s": k / max(c1 - c0, 1e-9),
                             "rollout_cores_used": (c1 - c0) / wall, "loadavg_1m": (l0 + os.getloadavg()[0]) / 2})
            best = max(runs, key=lambda x: x["scene_rollouts_per_s"])
            info = col.actor_info()
            out[n_actor] = {**best, "all_scene_rollouts_per_s": [x["scene_rollouts_per_s"] for x in runs],
                            "peak_rss_mb_rollout": max(i["peak_rss_bytes"] for i in info["rollout"]) / 2**20,
                            "peak_rss_mb_scorer": max(i["peak_rss_bytes"] for i in info["scorer"]) / 2**20}
        finally:
            col.shutdown()
    out["scenes"] = n
    out["n_rollout"] = n_rollout
    out["speedup_wall"] = out[2]["scene_rollouts_per_s"] / out[1]["scene_rollouts_per_s"]
    out["speedup_per_cpu_s"] = out[2]["scene_rollouts_per_rollout_cpu_s"] / out[1]["scene_rollouts_per_rollout_cpu_s"]
    return out


def smart_rft_loop(cfg, data, mode: str, out: Path, learner_workers: int = 0, reference_on: str | None = None) -> dict:
    """The library training loop (one MPO stage) with the distributed collector in `mode`; the
    update in the driver (`learner_workers` 0) or on that many Ray Train ranks (`LearnerGroup`);
    the reference log-probs where `reference_on` says (`learner.reference_on`; None: the config's)."""
    import copy

    from learner.smart_collect import DistributedCollector
    from learner.train_dp import LearnerGroup, LearnerGroupConfig
    from smart_r1.train.pipeline import run_pipeline

    cfg = copy.deepcopy(cfg)
    if reference_on is not None:
        cfg.learner.reference_on = reference_on
    col = DistributedCollector(cfg, data.vocab, _rt(mode=mode))
    group = None
    try:
        wrap, updater, group_start_s = col.wrap, None, 0.0
        if learner_workers >= 1:  # 0.25 CPU per rank: fits next to 2 rollout actors + 1 scorer in 2 CPUs
            group = LearnerGroup(cfg, data.vocab, LearnerGroupConfig(num_workers=learner_workers, resources={"CPU": 0.25}),
                                 n_train=len(data.train), publish=col.publish, out_dir=str(out / f"{mode}-dp"))
            wrap, updater, group_start_s = (lambda o: group.wrap(col.wrap(o))), group.update, group.start_seconds
        l0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = run_pipeline(cfg, out_dir=out / f"{mode}-{learner_workers}-{cfg.learner.reference_on}", data=data,
                           wrap_objective=wrap, updater=updater)
        total_wall = time.perf_counter() - t0
        info = col.actor_info()
    finally:
        if group is not None:
            group.shutdown()
        col.shutdown()
    h = res.history[1:]  # step 0: warm-up (and, async, the stage's first batch has nothing to overlap with)
    g = lambda k: [float(x.get(k, 0.0)) for x in h]  # noqa: E731
    step_s, wait_s = g("step_seconds"), g("runtime/collect_wait_seconds")
    span = sum(step_s)
    scenes = len(h) * cfg.data.batch_size
    busy = {"rollout (per actor)": sum(g("runtime/rollout_seconds_total")) / 2,
            "scoring (per scorer)": sum(g("runtime/score_seconds_total")) / 1,
            "learner (step - wait)": span - sum(wait_s)}
    return {
        "mode": mode, "reference_on": cfg.learner.reference_on, "steps_measured": len(h), "scenes": scenes, "scenes_per_s": scenes / span, "span_s": span,
        "wall_s_incl_setup": total_wall, "stage_busy_s": busy, "bound_by": max(busy, key=busy.get),
        "learner_idle_fraction": sum(wait_s) / span,
        "learner_share": 1.0 - sum(wait_s) / span,  # of a step: update + make_experience (sync: rollouts not hidden)
        "learner_workers": learner_workers, "learner_group_start_s": group_start_s,
        "learner_rank_peak_rss_mb": max(g("memory/learner_rank_peak_rss_mb") or [0.0]),
        "update_wait_s": sum(g("runtime/learner_wait_seconds")),
        "policy_lag": [x.get("runtime/policy_lag") for x in res.history],
        "prefetch_misses": res.history[-1].get("runtime/prefetch_misses", 0.0),
        "dropped_stale": res.history[-1].get("runtime/dropped_stale", 0.0),
        "losses": [x["loss"] for x in res.history],
        "loadavg_1m": (l0 + os.getloadavg()[0]) / 2,
        "peak_rss_mb": {"rollout actor": max(i["peak_rss_bytes"] for i in info["rollout"]) / 2**20,
                        "scorer actor": max(i["peak_rss_bytes"] for i in info["scorer"]) / 2**20},
    }


def smart_benchmarks(quick: bool, only: str | None, learner_workers: list[int] | None = None,
                     reference_on: list[str] | None = None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="srt_bench_smart_", dir="/tmp"))
    n_scenes, bs, n_rollout = (24, 8, 8) if quick else (48, 8, 16)
    steps = 6 if quick else 12
    cfg, data, prep_s = smart_setup(out, n_scenes, bs, n_rollout, steps)
    res = {"config": {"model": "cpu-demo", "train_scenes": n_scenes, "batch_size": bs, "n_rollout": n_rollout,
                      "rft_steps": steps, "backend": "fast", "objective": "mpo", "prepare_data_s": prep_s}}
    if only in (None, "scaling"):
        res["rollout_scaling"] = smart_rollout_scaling(cfg, data, n_rollout, 1 if quick else 2)
    if only in (None, "rft"):
        if reference_on:  # each place of the reference log-probs (learner.reference_on)
            res["rft_loop"] = {f"{m} ref={r}": smart_rft_loop(cfg, data, m, out, reference_on=r)
                               for r in reference_on for m in ("sync", "async")}
        else:
            res["rft_loop"] = {m: smart_rft_loop(cfg, data, m, out) for m in ("sync", "async")}
        for w in learner_workers or []:  # the update on a data-parallel worker group (learner.train_dp)
            res["rft_loop"].update({f"{m} dp{w}": smart_rft_loop(cfg, data, m, out, w) for m in ("sync", "async")})
    res["peak_rss_mb_driver"] = _peak_rss_mb()
    return res


# ---------------------------------------------------------------------------------------------
# Driver memory over many toy epochs (the +0.3 MB/epoch observation)
# ---------------------------------------------------------------------------------------------
def driver_memory(spec: dict, n_scenes: int, epochs: int, keep_reports: bool = False) -> dict:
    """RSS of the driver after each toy RFT epoch, keeping nothing of the reports but numbers
    (`keep_reports`: keep every EpochReport, as `rft_loop` does); tracemalloc's Python-heap
    growth between the first measured epoch and the last."""
    import tracemalloc

    from learner.runtime import DistributedRuntime

    ids = [f"scene{i}" for i in range(n_scenes)]
    rt = DistributedRuntime(spec, {"num_rollout_actors": 2, "num_scorers": 1, "rollout_cpus": 0.5, "scorer_cpus": 0.25,
                                   "learner_cpus": 0.5, "scenes_per_task": 4, "max_policy_lag": 1})
    try:
        for e in range(3):  # warm-up: imports, caches, first-time allocations
            rt.run_epoch(ids, epoch=e)
        gc.collect()
        tracemalloc.start(12)
        snap0 = tracemalloc.take_snapshot()
        rss, heap, kept = [], [], []
        for e in range(epochs):
            rep = rt.run_epoch(ids, epoch=100 + e)
            if keep_reports:
                kept.append(rep)
            del rep
            gc.collect()
            rss.append(psutil.Process().memory_info().rss / 2**20)
            heap.append(tracemalloc.get_traced_memory()[0] / 2**20)
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        rt.shutdown()
    top = snap1.compare_to(snap0, "traceback")[:5]
    half = len(rss) // 2
    slope = lambda ys: (statistics.mean(ys[half:]) - statistics.mean(ys[:half])) / max(1, half)  # noqa: E731
    return {
        "epochs": epochs, "scenes_per_epoch": n_scenes, "keep_reports": keep_reports, "rss_mb": rss, "python_heap_mb": heap,
        "rss_mb_per_epoch_2nd_vs_1st_half": slope(rss), "heap_mb_per_epoch_2nd_vs_1st_half": slope(heap),
        "heap_growth_mb_total": heap[-1] - heap[0],
        "top_heap_growth": [{"kb": st.size_diff / 1024, "count": st.count_diff,
                             "where": " -> ".join(f"{Path(f.filename).name}:{f.lineno}" for f in st.traceback)}  # caller -> callee
                            for st in top],
    }


def print_table(res: dict) -> None:
    rows = []
    sm = res.get("smart", {})
    if "rollout_scaling" in sm:
        r = sm["rollout_scaling"]
        for n in (1, 2):
            x = r[n]
            rows.append((f"smart: rollout, {n} rollout actor(s) ({r['scenes']} scenes x {r['n_rollout']} rollouts)",
                         f"{x['scene_rollouts_per_s']:.1f} scene-rollouts/s wall; {x['scene_rollouts_per_rollout_cpu_s']:.1f} "
                         f"per rollout-CPU-s; {x['rollout_cores_used']:.2f} cores used; load {x['loadavg_1m']:.1f}"))
        rows.append(("smart: 2 vs 1 rollout actors", f"{r['speedup_wall']:.2f}x wall, {r['speedup_per_cpu_s']:.2f}x per CPU-s"))
    for m, x in sm.get("rft_loop", {}).items():
        b = x["stage_busy_s"]
        rows.append((f"smart: RFT loop {m} (2 rollout actors, {x['steps_measured']} steps)",
                     f"{x['scenes_per_s']:.2f} scenes/s; learner share {x['learner_share']:.2f}, idle {x['learner_idle_fraction']:.2f}; "
                     f"bound by {x['bound_by']} "
                     f"(busy s: rollout/actor {b['rollout (per actor)']:.1f}, scoring {b['scoring (per scorer)']:.1f}, "
                     f"learner {b['learner (step - wait)']:.1f}); lag {x['policy_lag']}; misses {x['prefetch_misses']:.0f}; "
                     f"load {x['loadavg_1m']:.1f}"
                     + (f"; {x['learner_workers']} learner rank(s), group start {x['learner_group_start_s']:.1f} s, rank peak RSS "
                        f"{x['learner_rank_peak_rss_mb']:.0f} MB" if x.get("learner_workers") else "")))
    if sm:
        rss = {"driver/learner": sm["peak_rss_mb_driver"]}
        for x in sm.get("rft_loop", {}).values():
            for k, v in x["peak_rss_mb"].items():
                rss[k] = max(rss.get(k, 0.0), v)
        rows.append(("smart: peak RSS (MB)", ", ".join(f"{k} {v:.0f}" for k, v in rss.items())))
    if "rollout_scaling" in res:
        r = res["rollout_scaling"]
        rows.append(("toy: rollout 1 vs 2 actors", f"{r[1]['scene_rollouts_per_s']:.0f} vs {r[2]['scene_rollouts_per_s']:.0f} "
                     f"scene-rollouts/s ({r['speedup']:.2f}x)"))
    if "rft_loop" in res:
        x = res["rft_loop"]
        rows.append(("toy: RFT loop (streaming runtime)", f"{x['scenes_per_s']:.1f} scenes/s; learner idle "
                     f"{x['learner_idle_fraction']:.2f}; bound by {x['bound_by']}"))
    if "broadcast_tiny" in res:
        x = res["broadcast_tiny"]
        rows.append((f"weight broadcast tiny ({x['n_params'] / 1e6:.2f} M params, {x['mb']:.1f} MB)",
                     f"publish {x['publish_ms']:.0f} ms, pull+load {x['pull_and_load_ms']:.0f} ms, end to end {x['end_to_end_ms']:.0f} ms"))
    if "driver_memory" in res:
        x = res["driver_memory"]
        rows.append((f"toy: driver memory over {x['epochs']} epochs",
                     f"RSS {x['rss_mb'][0]:.1f} -> {x['rss_mb'][-1]:.1f} MB ({x['rss_mb_per_epoch_2nd_vs_1st_half']:+.3f} MB/epoch); "
                     f"Python heap {x['heap_growth_mb_total']:+.3f} MB total"))
    w = max(len(a) for a, _ in rows) if rows else 10
    print(f"\n{'measurement':<{w}} | result")
    print("-" * w + "-|-" + "-" * 60)
    for a, b in rows:
        print(f"{a:<{w}} | {b}")
    print(f"\nloadavg at end: {os.getloadavg()}; total {res['total_s']:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--workload", choices=["smart", "toy", "all"], default="smart")
    p.add_argument("--only", choices=["scaling", "rft", "broadcast", "memory"], default=None)
    p.add_argument("--keep-reports", action="store_true", help="memory probe: keep every epoch report (as rft_loop does)")
    p.add_argument("--memory-scenes", type=int, default=None, help="memory probe: scenes per epoch")
    p.add_argument("--learner-workers", type=int, nargs="*", default=[],
                   help="smart RFT loop: also run it with the update on N Ray Train ranks (runtime.learner.num_workers)")
    p.add_argument("--reference-on", nargs="*", choices=["rollout", "learner"], default=[],
                   help="smart RFT loop: run it once per value of learner.reference_on (default: the config's only)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    ray = _init_ray()
    q = args.quick
    heavy = {"name": "toy", "module": "benchmarks.toy_workload", "n_rollout": 32, "hidden": 512, "rollout_cost": 16 if not q else 2}
    rft = {"name": "toy", "module": "benchmarks.toy_workload", "n_rollout": 16, "hidden": 256, "rollout_cost": 8 if not q else 1}
    res = {"machine": f"{psutil.cpu_count()} CPUs", "loadavg_at_start": os.getloadavg(), "quick": q,
           "workload": args.workload, "torch_threads_per_actor": 1}
    try:
        if args.workload in ("toy", "all"):
            res["rollout_workload"], res["rft_workload"] = heavy, rft
            if args.only in (None, "scaling"):
                res["rollout_scaling"] = rollout_scaling(heavy, 48 if not q else 16, 8 if not q else 4, 2 if not q else 1)
            if args.only in (None, "rft"):
                res["rft_loop"] = rft_loop(rft, 64 if not q else 16, 4, 8 if not q else 1, 1)
            if args.only in (None, "memory"):
                res["driver_memory"] = driver_memory(rft, args.memory_scenes or (32 if not q else 16), 30, args.keep_reports)
        # after the toy part, so the toy driver-memory figures do not start from the smart learner's peak
        if args.workload in ("smart", "all") and args.only in (None, "scaling", "rft"):
            res["smart"] = smart_benchmarks(q, args.only, args.learner_workers, args.reference_on)
        if args.only in (None, "broadcast"):
            res["broadcast_tiny"] = broadcast_latency(10 if not q else 3)
        res["rss_mb_driver"] = psutil.Process().memory_info().rss / 2**20
    finally:
        ray.shutdown()
    res["loadavg_at_end"] = os.getloadavg()
    res["total_s"] = time.perf_counter() - t_start
    print(json.dumps(res, indent=1, default=float))
    print_table(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

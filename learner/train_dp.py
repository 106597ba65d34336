"""Data-parallel learners with Ray Train (`TorchTrainer`), same update code path as `Learner`.

Every Ray Train worker builds a `LearnerCore` (the workload's / objective's update, unchanged)
and joins torch.distributed (gloo on CPU, nccl on GPU, set up by Ray Train). Gradients are
averaged across workers by hooks on every parameter that fire after the gradient is
accumulated (`register_post_accumulate_grad_hook`), so the update function — which calls
`loss.backward()` and `optimizer.step()` itself and may call any model method, not only
`forward` — needs no change. Step k of the run gives batch `k * world + rank` to each rank;
rank 0 publishes the weights to the `WeightStore` once per step with a version, like the
single learner (sent by value to the WeightStore, which owns the object, so it outlives the Train worker).

    weights, metrics = run_data_parallel(workload_spec, items, num_workers=2, use_gpu=False, weight_store=store)

`items` is a list of `(RolloutResult, rewards)` (or an ObjectRef to one); the driver
(`learner.runtime`) produces them.
"""

from __future__ import annotations

import tempfile
from typing import Any


def _average_gradients_hooks(module) -> list:
    import torch.distributed as dist

    world = dist.get_world_size()
    handles = []
    for p in module.parameters():
        if p.requires_grad:
            def hook(param, world=world):
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad.div_(world)

            handles.append(p.register_post_accumulate_grad_hook(hook))
    return handles


def _train_loop(config: dict) -> None:
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    from learner.learner import LearnerCore
    from learner.weights import state_to_numpy

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = "cuda" if config["use_gpu"] and torch.cuda.is_available() else "cpu"
    core = LearnerCore(config["workload_spec"], device=device, torch_threads=config.get("torch_threads", 1))
    # Same initial weights everywhere (rank 0's).
    if dist.is_initialized() and world > 1:
        for t in core.policy.state_dict().values():
            dist.broadcast(t, src=0)
        _average_gradients_hooks(core.policy)
    items = config["items"]
    if not isinstance(items, list):
        items = ray.get(items)
    store = config.get("weight_store")
    n_steps = len(items) // world
    for k in range(n_steps):
        result, rewards = items[k * world + rank]
        metrics = core.apply(result, rewards)
        if rank == 0 and store is not None:
            ray.get(store.publish_value.remote(core.version, state_to_numpy(core.policy)))
        ray.train.report({"step": k, "version": core.version, **{k2: float(v) for k2, v in metrics.items()}})
    if rank == 0 and store is not None:
        ray.get(store.publish_value.remote(core.version, state_to_numpy(core.policy)))


def run_data_parallel(workload_spec, items, num_workers: int = 1, use_gpu: bool = False, weight_store=None,
                      cpus_per_worker: float = 0.5, torch_threads: int = 1, storage_path: str | None = None) -> dict[str, Any]:
    """Run `len(items) // num_workers` synchronous data-parallel steps. Returns the last reported metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if isinstance(items, list):
        items = ray.put(items)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"workload_spec": workload_spec, "items": items, "use_gpu": use_gpu,
                           "weight_store": weight_store, "torch_threads": torch_threads},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(storage_path=storage_path or tempfile.mkdtemp(prefix="smart_r1_train_"), name="dp-learner"),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return dict(result.metrics or {})

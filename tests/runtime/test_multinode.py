"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`: one raylet per node, each with
its own resources): a head (0 CPUs; the test process is the driver), two "rollout" nodes and a
"learner" node whose custom resource `learner` stands in for the GPU node.

- placement: rollout actors and scorers of an RFT stage land on the rollout nodes, the learner
  (the training loop, run in a Ray task asking for `learner`) on the learner node (node ids from
  Ray's actor table / runtime context, not from the actors' own reports);
- a rollout node removed in the middle of an RFT step: the step finishes on the other node and
  the losses equal an undisturbed run with the same seed (sync mode); a new node added back
  gets new actors;
- a rollout node removed in the middle of `evaluate --ray`: every (source, scene) row exactly
  once, equal to the undisturbed run;
- the data-parallel learner's Ray Train rank (`runtime.learner.resources: {learner: 1}`) lands on
  the learner node;
- the learner node removed mid-stage: a clear `LearnerLost` error; `--resume` on a new learner
  node continues from the last checkpoint (on a path every node reads) in the same MLflow run.

One cluster for the module (~15 s to start on 2 cores); every run is the tiny test config.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NODE = dict(num_cpus=1, object_store_memory=80_000_000)
ROLLOUT_NODE = dict(NODE, resources={"rollout": 2, "scorer": 2})
RUNTIME = ("{num_rollout_actors: 2, num_scorers: 2, rollout_cpus: 0.25, scorer_cpus: 0.25, "
           "rollout_resources: {rollout: 1}, scorer_resources: {scorer: 1}, distributed_eval: false}")


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"  # in-process test cluster: no remote clients
    tmp = tempfile.mkdtemp(prefix="srt_mn_", dir="/tmp")  # short: Ray socket paths are length-limited
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, object_store_memory=100_000_000,
                                                          include_dashboard=False, temp_dir=tmp))
    c.rollout_nodes = [c.add_node(**ROLLOUT_NODE) for _ in range(2)]
    c.learner_node = c.add_node(**NODE, resources={"learner": 1})
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def _actor_nodes(class_name: str, since: float = 0.0) -> list[str]:
    """Node ids of every actor of that class created after `since` (Ray's actor table)."""
    from ray._private.state import actors

    return [a["Address"]["NodeID"] for a in actors().values()
            if a["ActorClassName"].endswith(class_name) and a["StartTime"] / 1000.0 >= since and a["Address"]["NodeID"]]


def _rft_config(tmp_path: Path, name: str, out: Path, steps: int = 1, extra: str = "") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {out}\n"
        f"stages!:\n  - {{name: rft, objective: mpo, steps: {steps}, lr: 1.0e-3,"
        " params: {alpha: 0.5, beta: 0.04, n_rollout: 2}}\n"
        "eval: {after_each_stage: false}\n"
        f"tracking: {{enabled: false}}\n{extra}"
        f"runtime: {RUNTIME}\n"
    )
    return p


def _losses(history):
    return [(h["step"], h["loss"], h["reward/mean"]) for h in history]


@pytest.fixture(scope="module")
def undisturbed(cluster, tmp_path_factory):
    """The RFT stage on the rollout nodes, nothing removed: the reference numbers + placement."""
    from learner.driver import load_config_with_runtime, run_distributed

    tmp = tmp_path_factory.mktemp("mn_ref")
    t0 = time.time()
    cfg, rt = load_config_with_runtime(str(_rft_config(tmp, "ref", tmp / "out")))
    result = run_distributed(cfg, runtime=rt)
    return {"history": result.history, "since": t0}


def test_rollout_and_scorer_actors_land_on_rollout_nodes(cluster, undisturbed):
    rollout_ids = {n.node_id for n in cluster.rollout_nodes}
    rollouts = _actor_nodes("SmartRolloutWorker", undisturbed["since"])
    scorers = _actor_nodes("SmartScoreWorker", undisturbed["since"])
    assert len(rollouts) == 2 and len(scorers) == 2
    assert set(rollouts) <= rollout_ids and set(scorers) <= rollout_ids
    assert set(rollouts) == rollout_ids  # SPREAD: one rollout actor per rollout node
    # the run's state actors stay with the driver (head), never on a node that may go away
    assert set(_actor_nodes("WeightStore", undisturbed["since"])) == {cluster.head_node.node_id}


def test_rollout_node_lost_mid_rft_step_same_numbers(cluster, undisturbed, tmp_path, monkeypatch):
    import learner.smart_collect as sc
    from learner.cluster import node_of
    from learner.driver import load_config_with_runtime, run_distributed

    removed, pools = [], []

    class KillingPool(sc.ResilientPool):
        """On the first finished rollout chunk, remove the rollout node of a chunk still running."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            pools.append(self)

        def handle(self, ref):
            if self.name == "rollout" and not removed:
                others = [self.actors[i] for r, (i, _, _) in self.inflight.items() if r != ref]
                node_ids = {node_of(a) for a in others} or {node_of(self.actors[self.inflight[ref][0]])}
                victim = next(n for n in cluster.rollout_nodes if n.node_id in node_ids)
                cluster.remove_node(victim, allow_graceful=False)
                cluster.rollout_nodes.remove(victim)
                removed.append(victim.node_id)
            return super().handle(ref)

    monkeypatch.setattr(sc, "ResilientPool", KillingPool)
    cfg, rt = load_config_with_runtime(str(_rft_config(tmp_path, "kill", tmp_path / "out")))
    result = run_distributed(cfg, runtime=rt)
    assert removed, "no rollout node was removed"
    assert sum(p.n_requeued for p in pools) >= 1  # the lost chunk was re-run on the surviving node
    assert _losses(result.history) == _losses(undisturbed["history"])  # exactly the undisturbed numbers

    # A node added back: the next run's actors use it (checked by the evaluate test below).
    cluster.added_back = cluster.add_node(**ROLLOUT_NODE)
    cluster.rollout_nodes.append(cluster.added_back)
    cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def scenes_path(tmp_path_factory):
    from smart_r1.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("mn_scenes")
    return str(write_synthetic_dataset(root, num_scenes=4, seed=5, num_shards=1, progress=False)[0])


def test_rollout_node_lost_mid_evaluate_every_scene_once(cluster, scenes_path, tmp_path):
    from learner.cluster import node_of
    from learner.distributed_eval import evaluate_distributed
    from smart_r1.eval.evaluate import evaluate

    from .test_distributed_eval import BASELINES, assert_same_rows

    kw = dict(backend="fast", num_rollouts=2, seed=3, report=False, progress=False)
    ref = evaluate(BASELINES, scenes_path, out_dir=tmp_path / "ref", **kw)  # single process, undisturbed
    assert ref.n_scored == 2 * 4 and not ref.failed

    removed, placed = [], []

    def remove_one(ex, event, key):
        if event == "rollout" and not removed:  # rollouts of other scenes are still in flight
            placed.extend(node_of(a) for a in ex.rollout_actors)
            victim = next(n for n in cluster.rollout_nodes if n.node_id == placed[1])
            cluster.remove_node(victim, allow_graceful=False)
            cluster.rollout_nodes.remove(victim)
            removed.append(victim.node_id)

    hit = evaluate_distributed(BASELINES, scenes_path, out_dir=tmp_path / "hit", on_event=remove_one, num_rollout_workers=2,
                               num_scorers=1, rollout_resources={"rollout": 1}, scorer_resources={"scorer": 1},
                               rollout_cpus=0.25, scorer_cpus=0.25, **kw)
    assert removed
    if getattr(cluster, "added_back", None) is not None:  # the node added back after the RFT test gets new actors
        assert cluster.added_back.node_id in placed
    assert set(placed) <= {n.node_id for n in cluster.rollout_nodes} | set(removed)
    assert hit.runtime_stats["requeued"] >= 1
    assert hit.n_scored == 2 * 4 and not hit.failed
    assert_same_rows(hit.rows, ref.rows)  # every (source, scene) row exactly once, the undisturbed numbers
    cluster.rollout_nodes.append(cluster.add_node(**ROLLOUT_NODE))  # back to two rollout nodes
    cluster.wait_for_nodes()


def test_data_parallel_learner_ranks_land_on_the_learner_node(cluster, tmp_path):
    """The data-parallel learner (`runtime.learner`, Ray Train ranks) asks for `learner`: its rank runs there."""
    from learner.driver import load_config_with_runtime, run_distributed

    p = tmp_path / "dp.yaml"
    p.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {tmp_path / 'out'}\n"
        "stages!:\n  - {name: bc, objective: bc, steps: 1, lr: 5.0e-3, params: {label_smoothing: 0.1}}\n"
        "eval: {after_each_stage: false}\n"
        "tracking: {enabled: false}\n"
        "runtime: {num_rollout_actors: 1, num_scorers: 1, rollout_cpus: 0.25, scorer_cpus: 0.25, "
        "rollout_resources: {rollout: 1}, scorer_resources: {scorer: 1}, distributed_eval: false, "
        "learner: {num_workers: 1, resources: {CPU: 0.5, learner: 1}}}\n"
    )
    t0 = time.time()
    cfg, rt = load_config_with_runtime(str(p))
    result = run_distributed(cfg, runtime=rt)
    assert [h["step"] for h in result.history] == [0]
    ranks = _actor_nodes("RayTrainWorker", t0)
    assert ranks and set(ranks) == {cluster.learner_node.node_id}


def test_learner_node_lost_then_resume_same_run(cluster, tmp_path, mlflow_server):
    from mlflow import MlflowClient

    from learner.driver import LearnerLost, run_on_learner_node
    from smart_r1.train.checkpoint import Checkpoint, last_checkpoint

    out = tmp_path / "shared_out"  # a path every node of this machine reads (the shared storage)
    cfg_path = tmp_path / "learner.yaml"
    cfg_path.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {out}\n"
        "stages!:\n  - {name: bc, objective: bc, steps: 12, lr: 5.0e-3, checkpoint_every: 1, params: {label_smoothing: 0.1}}\n"
        "eval: {after_each_stage: false}\n"
        f"tracking: {{enabled: true, experiment: rt-multinode, uri: '{mlflow_server.uri}'}}\n"
        "runtime: {num_rollout_actors: 1, num_scorers: 1, rollout_cpus: 0.25, scorer_cpus: 0.25, "
        "rollout_resources: {rollout: 1}, scorer_resources: {scorer: 1}, distributed_eval: false}\n"
    )
    lost_node = cluster.learner_node

    def remove_after_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline:
            p = last_checkpoint(out) if (out / "checkpoints").exists() else None
            if p is not None and Checkpoint.load(p).step >= 2:
                cluster.remove_node(lost_node, allow_graceful=False)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=remove_after_checkpoint, daemon=True)
    killer.start()
    with pytest.raises(LearnerLost, match="--resume"):
        run_on_learner_node(str(cfg_path), {"learner": 1}, out_dir=str(out), num_cpus=0.5)
    killer.join()
    ckpt = Checkpoint.load(last_checkpoint(out))
    assert 2 <= ckpt.step < 12 and ckpt.mlflow_run_id

    cluster.learner_node = cluster.add_node(**NODE, resources={"learner": 1})  # a new learner node
    cluster.wait_for_nodes()
    done = run_on_learner_node(str(cfg_path), {"learner": 1}, resume=True, out_dir=str(out), num_cpus=0.5)
    assert done["node_id"] == cluster.learner_node.node_id != lost_node.node_id
    assert not done["stopped_early"]
    client = MlflowClient(mlflow_server.uri)
    runs = client.search_runs([client.get_experiment_by_name("rt-multinode").experiment_id])
    assert [r.info.run_id for r in runs] == [ckpt.mlflow_run_id]  # the same run, continued
    steps = sorted(m.step for m in client.get_metric_history(ckpt.mlflow_run_id, "bc/loss"))
    assert steps[-1] == 11 and set(range(ckpt.step, 12)) <= set(steps)

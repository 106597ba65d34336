"""Ray rollout and scorer actors (the library `smart_r1` never imports Ray; this package does).

- `workload`: the `Workload` interface the actors call (library code wrapped, never copied),
  `RolloutResult` / `ScoreResult` (numpy only), the workload registry.
- `rollout_actor.RolloutActor`: model replica, newest weights by version, batches of scenes x rollouts.
- `scorer.ScorerActor`: scores one scene's rollouts (fast backend default; official in its own process).
(The toy workload of the generic-runtime tests and benchmarks lives in `benchmarks/toy_workload.py`.)
"""

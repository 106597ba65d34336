"""`evaluate --top-k`: the sampler top-k reaches the checkpoint's rollouts (top-1 makes every
rollout the same, the default 48 does not), labels the rows (`name@topK`) so they never resume as
the default's, and survives the source recipe used by distributed workers."""

from __future__ import annotations


import numpy as np
import pytest



def test_top_k_reaches_checkpoint_rollouts(tmp_path, untrained_checkpoint):
    import pyarrow.parquet as pq
    import torch

    from smart_r1.cli import main
    from smart_r1.eval.sources import make_source, source_from_spec

    ckpt, _, scene, val_file = untrained_checkpoint
    torch.set_num_threads(1)

    top1, default = make_source(str(ckpt), top_k=1), make_source(str(ckpt))
    assert (top1.name, default.name) == ("run/last@top1", "run/last")
    r1 = top1.rollouts(scene, 3, 0).trajectories  # [3, n_agent, 80, 4]
    rd = default.rollouts(scene, 3, 0).trajectories
    assert np.array_equal(r1[0], r1[1]) and np.array_equal(r1[0], r1[2])  # top-1: one token per step
    assert not np.array_equal(rd[0], rd[1])
    again = source_from_spec(top1.spec_tuple())
    assert again.top_k == 1 and again.name == top1.name
    with pytest.raises(ValueError, match="top_k"):
        make_source(str(ckpt), top_k=0)

    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--scenes", str(val_file), "--num-rollouts", "2", "--top-k", "1",
               "--out", str(out), "--no-report", "--quiet"])
    assert rc == 0
    rows = pq.read_table(out / "scores.parquet").to_pylist()
    assert {r["source"] for r in rows} == {"run/last@top1"}

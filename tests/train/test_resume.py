"""A killed run resumed from its last checkpoint continues the same loss curve: same steps, losses
within 1e-6, weights within 1e-4 (not bitwise on CPU; docs/training.md, "Determinism and resume")."""

from __future__ import annotations

import pytest
import torch

from smart_r1.train.checkpoint import Checkpoint, last_checkpoint
from smart_r1.train.pipeline import run_pipeline

from tiny_setup import tiny_config


def _losses(history):
    return [(h["stage"], h["step"], h["loss"]) for h in history]


def _cfg(stages: str, out):
    return tiny_config("eval.after_each_stage=false", f"stages={stages}", f"output_dir={out}")


SCHEDULE = ("[{name: bc, objective: bc, steps: 4, lr: 5.0e-3, checkpoint_every: 2},"
            " {name: rft, objective: mpo, steps: 2, lr: 1.0e-3, checkpoint_every: 1,"
            "  params: {alpha: calibrate, n_rollout: 2, calibration_batches: 1}}]")


def test_resume_bc_and_rft_is_exact(tiny_data, tmp_path):
    full = run_pipeline(_cfg(SCHEDULE, tmp_path / "full"), data=tiny_data)
    assert len(full.history) == 6
    # Kill after 3 steps: last checkpoint is at step 2 of stage bc; step 3's work is lost.
    killed = run_pipeline(_cfg(SCHEDULE, tmp_path / "killed"), data=tiny_data, stop_after_steps=3)
    assert killed.stopped_early
    ck = Checkpoint.load(last_checkpoint(tmp_path / "killed"))
    assert (ck.stage_name, ck.step, ck.stage_done) == ("bc", 2, False)
    assert ck.optimizer is not None and ck.scheduler is not None and ck.vocab_id == tiny_data.vocab.vocab_id
    # Resume, killed again inside the RFT stage (after its first step: reference + alpha checkpointed).
    again = run_pipeline(_cfg(SCHEDULE, tmp_path / "killed"), data=tiny_data, resume=True, stop_after_steps=3)
    assert again.stopped_early
    ck = Checkpoint.load(last_checkpoint(tmp_path / "killed"))
    assert (ck.stage_name, ck.step) == ("rft", 1)
    assert ck.reference_model is not None and ck.objective["alpha"] is not None
    resumed = run_pipeline(_cfg(SCHEDULE, tmp_path / "killed"), data=tiny_data, resume=True)
    # Same steps, same order; values bitwise or within 1e-6 (CPU matmul kernels may pick another
    # reduction order for differently aligned buffers, ~1e-7 here).
    got, want = _losses(resumed.history), _losses(full.history)
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert [g[2] for g in got] == pytest.approx([w[2] for w in want], abs=1e-6, rel=1e-6)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)["model"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst

"""GPU path of the learner update: device placement, micro-batches on CUDA, bf16 autocast.
Skipped when no GPU is visible (the CPU tests cover the maths)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _setup(device):
    from smart_r1.model.batch import collate, vocab_sizes_of
    from smart_r1.model.presets import get_preset
    from smart_r1.model.smart import SmartModel
    from smart_r1.model.synthetic import SyntheticVocab, synthetic_tokenized_scene
    from smart_r1.objectives.base import TrainBatch

    vocab = SyntheticVocab(sizes=(48, 24, 32), map_size=40, seed=3)
    scenes = [synthetic_tokenized_scene(vocab, n_agent=9, n_road=1, extent=60.0, seed=21 + i) for i in range(2)]
    batch = collate(scenes, vocab)
    torch.manual_seed(0)
    model = SmartModel(get_preset("cpu-demo").replace(dropout=0.0), vocab_sizes_of(vocab))
    inputs = TrainBatch(batch, batch.sim_mask.clone(), list(batch.scenario_id))
    return model.to(device), inputs.to(device)


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_microbatched_update_on_cuda_matches_cpu(autocast):
    from smart_r1.objectives import get_objective
    from smart_r1.objectives.base import run_rollout
    from smart_r1.train.step import accumulate_gradients, make_reference

    grads = {}
    for device in ("cpu", "cuda"):
        model, inputs = _setup(device)
        reference = make_reference(model)
        objective = get_objective("mpo", alpha=0.5, beta=0.1, n_rollout=3).to(device)
        rb = run_rollout(model, inputs.batch, 3, "topk", {"k": 5}, torch.Generator().manual_seed(7))
        assert rb.token_index.device.type == device
        exp = objective.make_experience(inputs, rb, torch.linspace(0, 1, 6).reshape(3, 2))
        if device == "cuda":  # the same rollouts on both devices: sampling differs across devices
            exp = cpu_exp.to("cuda")
        else:
            cpu_exp = exp
        model.zero_grad(set_to_none=True)
        accumulate_gradients(model, objective, exp, reference, max_tokens=200, autocast=autocast if device == "cuda" else None)
        grads[device] = torch.cat([p.grad.reshape(-1).float().cpu() for p in model.parameters() if p.grad is not None])
    rel = float((grads["cuda"] - grads["cpu"]).norm() / grads["cpu"].norm())
    assert rel < (2e-2 if autocast is not None else 1e-4), rel

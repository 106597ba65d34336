"""A small real workload for the runtime's tests and benchmarks (no Waymo data, no tokenizer).

Scenes are ids; a scene's features [n_feat] and its "good" action come from a hash of the id.
The policy is a small MLP choosing one of `n_action` actions at each of `n_step` closed-loop
steps (the previous action is fed back). The reward of a rollout is the share of steps that
chose the scene's good action, so a working RL loop raises the mean reward. Ids starting with
`bad` are bad scenes (raise `BadScene`). `rollout_cost` repeats the forward pass to make the
rollout compute-bound like the real simulator; `score_seconds` / `rollout_seconds` add latency
(fault tests use it to hit a task mid-flight).
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import torch

from rollout_workers.workload import BadScene, RolloutResult, Workload, register_workload


def _scene_rng(scene_id: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha1(scene_id.encode()).hexdigest()[:12], 16))


class ToyPolicy(torch.nn.Module):
    def __init__(self, n_feat: int, n_action: int, n_step: int, hidden: int):
        super().__init__()
        self.n_action, self.n_step = n_action, n_step
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_feat + n_action + n_step, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
            torch.nn.Tanh(), torch.nn.Linear(hidden, n_action),
        )

    def step_logits(self, feat: torch.Tensor, prev: torch.Tensor, t: int) -> torch.Tensor:
        # feat [B, F], prev [B] int (-1 = none) -> logits [B, n_action]
        prev_1h = torch.nn.functional.one_hot(prev.clamp_min(0), self.n_action).float() * (prev >= 0).float()[:, None]
        t_1h = torch.zeros(feat.shape[0], self.n_step)
        t_1h[:, t] = 1.0
        return self.net(torch.cat([feat, prev_1h, t_1h], dim=-1))

    def logprobs(self, feat: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        # feat [B, F], actions [B, T] -> log pi(a_t) [B, T] (teacher-forced, with grad)
        out = []
        prev = torch.full((feat.shape[0],), -1, dtype=torch.long)
        for t in range(self.n_step):
            logp = torch.log_softmax(self.step_logits(feat, prev, t), dim=-1)  # [B, n_action]
            out.append(logp.gather(-1, actions[:, t : t + 1]).squeeze(-1))
            prev = actions[:, t]
        return torch.stack(out, dim=1)


@register_workload("toy")
class ToyWorkload(Workload):
    def __init__(
        self,
        n_feat: int = 16,
        n_action: int = 8,
        n_step: int = 16,
        hidden: int = 64,
        n_rollout: int = 8,
        lr: float = 3e-2,
        rollout_cost: int = 1,
        score_seconds: float = 0.0,
        rollout_seconds: float = 0.0,
        torch_threads: int = 1,
        seed: int = 0,
        crash_score_on: str | None = None,
        crash_marker: str | None = None,
    ):
        self.n_feat, self.n_action, self.n_step, self.hidden = n_feat, n_action, n_step, hidden
        self.n_rollout, self.lr, self.rollout_cost = n_rollout, lr, rollout_cost
        self.score_seconds, self.seed = score_seconds, seed
        self.rollout_seconds = rollout_seconds
        # Fault injection for tests: the scorer process dies (os._exit) the first time it sees
        # `crash_score_on` (a marker file makes it once across restarts).
        self.crash_score_on, self.crash_marker = crash_score_on, crash_marker
        torch.set_num_threads(torch_threads)

    def make_policy(self):
        torch.manual_seed(self.seed)
        return ToyPolicy(self.n_feat, self.n_action, self.n_step, self.hidden)

    def _features(self, scene_id: str) -> tuple[np.ndarray, int]:
        if scene_id.startswith("bad"):
            raise BadScene(scene_id, "field 'features': corrupt record (toy bad scene)")
        rng = _scene_rng(scene_id)
        return rng.normal(size=self.n_feat).astype(np.float32), int(rng.integers(self.n_action))

    def load_inputs(self, scene_ids):
        good, feats, bad = [], [], {}
        for sid in scene_ids:
            try:
                feats.append(self._features(sid)[0])
                good.append(sid)
            except BadScene as err:
                bad[sid] = err.reason
        return (good, np.stack(feats) if feats else np.zeros((0, self.n_feat), np.float32)), bad

    @torch.no_grad()
    def rollout(self, policy, inputs, seed):
        ids, feats = inputs  # feats [n_scene, F]
        if self.rollout_seconds:
            time.sleep(self.rollout_seconds)
        g = torch.Generator().manual_seed(int(seed))
        R, S = self.n_rollout, len(ids)
        feat = torch.as_tensor(feats).repeat_interleave(R, dim=0)  # [S*R, F]
        actions = torch.zeros(S * R, self.n_step, dtype=torch.long)  # [S*R, T]
        logp = torch.zeros(S * R, self.n_step)  # [S*R, T]
        prev = torch.full((S * R,), -1, dtype=torch.long)
        for t in range(self.n_step):
            for _ in range(self.rollout_cost - 1):  # extra compute, same result
                policy.step_logits(feat, prev, t)
            lp = torch.log_softmax(policy.step_logits(feat, prev, t), dim=-1)  # [S*R, A]
            a = torch.multinomial(lp.exp(), 1, generator=g).squeeze(-1)  # [S*R]
            actions[:, t], logp[:, t] = a, lp.gather(-1, a[:, None]).squeeze(-1)
            prev = a
        actions_np = actions.view(S, R, self.n_step).numpy()  # [S, R, T]
        payload = {
            "features": np.asarray(feats, np.float32),  # [S, F]
            "actions": actions_np,  # [S, R, T]
            "logprob": logp.view(S, R, self.n_step).numpy(),  # [S, R, T]
        }
        scoring = {sid: actions_np[i] for i, sid in enumerate(ids)}  # [R, T] each
        return ids, payload, scoring

    def score(self, scene_id, actions):
        if self.crash_score_on == scene_id and self.crash_marker and not os.path.exists(self.crash_marker):
            open(self.crash_marker, "w").write(str(os.getpid()))
            os._exit(1)
        if self.score_seconds:
            time.sleep(self.score_seconds)
        good = self._features(scene_id)[1]
        reward = (np.asarray(actions) == good).mean(axis=-1).astype(np.float32)  # [R]
        return reward, {"realism/metametric": float(reward.mean())}

    def make_learner(self, policy):
        return torch.optim.Adam(policy.parameters(), lr=self.lr)

    def update(self, opt, policy, result: RolloutResult, rewards):
        feats = torch.as_tensor(result.payload["features"])  # [S, F]
        actions = torch.as_tensor(result.payload["actions"])  # [S, R, T]
        S, R, T = actions.shape
        r = torch.as_tensor(np.stack([rewards[s] for s in result.scene_ids]))  # [S, R]
        adv = r - r.mean(dim=1, keepdim=True)  # [S, R] group baseline
        logp = policy.logprobs(feats.repeat_interleave(R, 0), actions.reshape(S * R, T)).view(S, R, T)  # [S, R, T]
        old = torch.as_tensor(result.payload["logprob"])  # [S, R, T]
        ratio = torch.exp(logp - logp.detach())  # [S, R, T] (=1, gradient of log pi)
        loss = -(ratio * adv[:, :, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {
            "loss": float(loss.detach()),
            "reward/mean": float(r.mean()),
            "reward/std": float(r.std(unbiased=False)),
            "kl/behaviour": float((old - logp.detach()).mean()),
        }

    def learner_state_dict(self, opt):
        return opt.state_dict()

    def load_learner_state_dict(self, opt, state):
        opt.load_state_dict(state)


@register_workload("model_preset")
class ModelPresetWorkload(Workload):
    """A SMART-R1 model of a preset as the policy (weight-broadcast benchmark); no rollout."""

    def __init__(self, preset: str = "tiny", vocab_size: int = 2048, map_vocab_size: int = 1024, torch_threads: int = 1):
        self.preset, self.vocab_size, self.map_vocab_size = preset, vocab_size, map_vocab_size
        torch.set_num_threads(torch_threads)

    def make_policy(self):
        from smart_r1.model.presets import get_preset
        from smart_r1.model.smart import SmartModel

        torch.manual_seed(0)
        n = self.vocab_size
        return SmartModel(get_preset(self.preset), {"vehicle": n, "pedestrian": n, "cyclist": n, "map": self.map_vocab_size})

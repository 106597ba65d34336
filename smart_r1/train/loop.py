"""Single-process trainer running a stage schedule ([bc, catk, mpo, catk] ...).

Determinism / exact resume: everything random in a step is a pure function of
(config seed, stage index, step): the scene order (`data.step_indices`), the torch global RNG
(dropout) re-seeded at every step, and the rollout generator. A run resumed from its last
checkpoint therefore replays the same steps with the same weights and optimizer state, and
its loss curve continues bit-for-bit (tests/train/test_resume.py). RNG states are still saved
in the checkpoint (and restored) for code outside the step.

Stage flow: build the objective -> (RFT) snapshot the reference policy -> (MPO with
`alpha: calibrate`) measure the starting policy's mean reward -> steps (collect -> update ->
log -> periodic checkpoint, validation every `eval.every_n_steps`) -> evaluation on the held-out
split -> renders of the first `eval.render_scenes` validation scenes -> stage checkpoint
(`checkpoints/<stage>.pt` + `last.pt`).

What goes to the tracker: every resolved config value as a flattened param
(`stages.2.params.beta`); per step `<stage>/<metric>` (the objective's update metrics under their
own names) at the global step; validation as `val/<metric>` at the global step (one curve across
stages, points inside a stage every `eval.every_n_steps` on `eval.during_stage_n_scenes` scenes,
and after each stage on `eval.n_scenes`), and the end-of-stage evaluation again as
`eval/<stage>/<metric>` (the table's numbers); run tags `stage` (the running stage) and
`stage.<index>` (name, objective, status, global step range); renders as artifacts
`renders/<index>_<stage>/`.
"""

from __future__ import annotations

import hashlib
import warnings
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from smart_r1.objectives import get_objective
from smart_r1.objectives.base import run_rollout, motion_guards, score_metrics
from smart_r1.objectives.bc import logged_token_mask, token_accuracy
from smart_r1.train.checkpoint import Checkpoint, last_checkpoint, rng_state, save_checkpoint, set_rng_state
from smart_r1.train.config import StageConfig, TrainConfig, resolved_dict
from smart_r1.train.data import Split, make_inputs, step_indices, steps_per_epoch
from smart_r1.train.step import TrainState, build_train_state, make_reference, update
from smart_r1.tracking import flatten
from smart_r1.tokens.tokenized_scene import N_HISTORY_TOKEN


def derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints / strings (stable across processes and platforms)."""
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def stage_total_steps(stage: StageConfig, n_train: int, batch_size: int) -> int:
    if stage.steps is not None:
        return int(stage.steps)
    return max(1, int(math.ceil(float(stage.epochs) * steps_per_epoch(n_train, batch_size))))


class _NullTracker:
    run_id = None

    def log_params(self, *a, **k):
        pass

    def log_metrics(self, *a, **k):
        pass

    def log_artifact(self, *a, **k):
        pass

    def set_tags(self, *a, **k):
        pass

    def close(self, *a, **k):
        pass


def stage_tag(stage: StageConfig, first_step: int, last_step: int, status: str) -> str:
    """Value of the run tag `stage.<index>`: what the stage is, where its steps lie, how far it got."""
    return f"{stage.name} ({stage.objective}): {status}, global steps {first_step}-{last_step}"


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def eval_chunks(n_split: int, eval_cfg, n_scenes: int | None = None) -> list[list[int]]:
    """The held-out scene indices of `evaluate`, in batches of `eval_cfg.batch_size`."""
    n = min(n_split, n_scenes if n_scenes is not None else eval_cfg.n_scenes)
    if n <= 0:
        raise ValueError("evaluate: no held-out scenes")
    bs = max(1, eval_cfg.batch_size)
    return [list(range(i, min(n, i + bs))) for i in range(0, n, bs)]


def eval_chunk_generator(seed: int, chunk_index: int) -> torch.Generator:
    """Rollout generator of one evaluation chunk: a pure function of (seed, chunk), so chunks can
    run in any order or process (distributed validation) and give the same rollouts."""
    return torch.Generator().manual_seed(derive_seed(seed, "eval", int(chunk_index)))


@torch.no_grad()
def eval_chunk(model, split: Split, idx: list[int], vocab, eval_cfg, generator: torch.Generator, max_agents: int = 32,
               radius_m: float = 100.0) -> dict:
    """One chunk of `evaluate` without scoring: next-token hits / token count (teacher-forced,
    future tokens of the simulated agents), the motion guards, and per scene its `Scene` and
    closed-loop `Rollouts` (to score with the metric backend)."""
    inputs = make_inputs(split, idx, vocab, max_agents, radius_m)
    batch = inputs.batch
    logits = model(batch)  # [n_agent, 18, V]
    mask = logged_token_mask(batch, batch.sim_mask)  # [n_agent, 18]
    mask[:, :N_HISTORY_TOKEN] = False
    acc_hits = ((logits.argmax(-1) == batch.token_index) & mask).sum()
    rb = run_rollout(model, batch, eval_cfg.n_rollout, eval_cfg.sampler, dict(eval_cfg.sampler_params), generator)
    return {
        "hits": int(acc_hits),
        "tokens": int(mask.sum()),
        "guards": motion_guards(batch, rb, batch.sim_mask),
        "scenes": list(inputs.scenes),
        "rollouts": [rb.to_rollouts(s) for s in range(len(inputs.scenes))],
    }


def combine_eval(parts: list[dict], scores: list, n: int) -> dict[str, float]:
    """`evaluate`'s result from its chunks (in chunk order) and the scene scores (in scene order)."""
    from smart_r1.metrics.base import aggregate

    out = {"next_token_accuracy": sum(p["hits"] for p in parts) / max(sum(p["tokens"] for p in parts), 1)}
    out.update({k: v for k, v in aggregate(scores).items()})
    guards = [p["guards"] for p in parts]
    for k in guards[0]:
        out[k] = float(np.mean([g[k] for g in guards]))
    out["n_scenes"] = float(n)
    return out


def evaluate(model, split: Split, vocab, eval_cfg, seed: int, max_agents: int = 32, radius_m: float = 100.0,
             progress: bool = False, n_scenes: int | None = None) -> dict[str, float]:
    """Held-out evaluation: next-token accuracy (teacher-forced, future tokens of the simulated
    agents), realism meta metric + 3 groups + 10 sub-metrics + minADE via the metric backend on
    `n_rollout` closed-loop rollouts, and the motion guards (distance / speed vs log).
    Chunk `c` rolls out with `eval_chunk_generator(seed, c)` (`learner.distributed_eval`
    spreads the chunks over Ray actors and gets the same numbers)."""
    from smart_r1.metrics.base import get_backend

    backend = get_backend(eval_cfg.backend)
    chunks = eval_chunks(len(split), eval_cfg, n_scenes)
    was_training = model.training
    model.eval()
    parts: list[dict] = []
    scores = []
    try:
        from tqdm.auto import tqdm

        it = tqdm(list(enumerate(chunks)), desc="eval", leave=False, disable=not progress)
    except ImportError:
        it = list(enumerate(chunks))
    try:
        for ci, idx in it:
            part = eval_chunk(model, split, idx, vocab, eval_cfg, eval_chunk_generator(seed, ci), max_agents, radius_m)
            scores += [backend.score(scene, ro) for scene, ro in zip(part.pop("scenes"), part.pop("rollouts"))]
            parts.append(part)
    finally:
        model.train(was_training)
    return combine_eval(parts, scores, sum(len(c) for c in chunks))


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    evaluations: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    output_dir: Path
    stopped_early: bool = False


class Trainer:
    """Runs `cfg.stages` on `train` (evaluating on `val`) with checkpoints under `out_dir`.

    `stop_after_steps` (tests) simulates a kill: the run returns after that many optimiser steps
    in total (counted across stages in this process), right after a checkpoint save if one was
    due, otherwise without saving.

    Hooks for runtimes that distribute the work (the library itself never imports them):

    - `wrap_objective(objective) -> objective`: applied to every stage's objective right after
      `get_objective`; the Ray driver uses it to run RL experience collection on actors.
      An objective may define `prefetch(inputs, generator, reference)`: the loop then announces
      the next step's inputs and rollout generator before collecting the current step, so a
      runtime can roll the next batch out while the learner updates (see `learner.smart_collect`).
    - `evaluator(model, split, vocab, eval_cfg, seed, max_agents, radius_m, progress) -> dict`:
      replaces the held-out evaluation after each stage (default `evaluate` in this module).
    - `updater(state, objective, experience, stage_index=..., total_steps=...) -> metrics`:
      replaces the optimiser step `smart_r1.train.step.update` (same contract: one step, advances
      `state.step`, leaves `state.model` holding the new weights); the Ray driver uses it to run
      the update on a data-parallel worker group (`learner.train_dp.LearnerGroup`).
    """

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, vocab, train: Split, val: Split | None,
                 out_dir: str | Path, tracker=None, vocab_dir: str | None = None, stop_after_steps: int | None = None,
                 wrap_objective: Callable[[Any], Any] | None = None, evaluator: Callable[..., dict] | None = None,
                 updater: Callable[..., dict] | None = None):
        self.cfg = cfg
        self.wrap_objective = wrap_objective
        self.updater = updater
        self.evaluator = evaluator or evaluate
        self.model = model
        self.vocab = vocab
        self.train = train
        self.val = val
        self.out_dir = Path(out_dir)
        self.tracker = tracker or _NullTracker()
        self.vocab_dir = vocab_dir
        self.stop_after_steps = stop_after_steps
        self.history: list[dict[str, Any]] = []
        self.evaluations: dict[str, dict[str, float]] = {}
        self._steps_this_process = 0
        self._global_step_offset = 0

    # -------------------------------------------------------------------------------------------
    def _checkpoint(self, state: TrainState | None, objective, stage_index: int, step: int, done: bool) -> Checkpoint:
        st = state.state_dict(objective) if state is not None else None
        return Checkpoint(
            model=self.model.state_dict(),
            config=resolved_dict(self.cfg),
            stage_index=stage_index,
            stage_name=self.cfg.stages[stage_index].name,
            step=step,
            stage_done=done,
            optimizer=st["optimizer"] if st and not done else None,
            scheduler=st["scheduler"] if st and not done else None,
            objective=st["objective"] if st else {},
            reference_model=st["reference_model"] if st else None,
            rng=rng_state(),
            vocab_id=getattr(self.vocab, "vocab_id", None),
            vocab_dir=self.vocab_dir,
            model_config=getattr(getattr(self.model, "config", None), "to_dict", lambda: None)(),
            mlflow_run_id=getattr(self.tracker, "run_id", None),
            history=list(self.history),
            evaluations=dict(self.evaluations),
        )

    def _batch_size(self, stage: StageConfig) -> int:
        return int(stage.batch_size or self.cfg.data.batch_size)

    def _inputs(self, stage_index: int, step: int, objective, batch_size: int):
        idx = step_indices(len(self.train), batch_size, self.cfg.seed, stage_index, step)
        return make_inputs(self.train, idx, self.vocab, self.cfg.data.max_train_agents, self.cfg.data.train_radius_m,
                           with_scenes=objective.needs_scenes)

    def _calibrate(self, objective, state: TrainState, stage_index: int, batch_size: int) -> float:
        """alpha = mean reward of the starting policy over `calibration_batches` batches."""
        rewards = []
        for i in range(objective.calibration_batches):
            idx = step_indices(len(self.train), batch_size, derive_seed(self.cfg.seed, "calibrate"), stage_index, i)
            inputs = make_inputs(self.train, idx, self.vocab, self.cfg.data.max_train_agents, self.cfg.data.train_radius_m)
            gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, stage_index, "calibrate", i))
            exp = objective.collect(state.model, inputs, generator=gen, reference=None)  # rewards only
            rewards.append(exp.rewards[exp.extras["reward_valid"]].flatten())
        allr = torch.cat(rewards)
        if allr.numel() == 0:
            raise ValueError(f"stage {self.cfg.stages[stage_index].name!r}: alpha calibration got no finite reward")
        alpha = float(allr.mean())
        objective.set_alpha(alpha)
        return alpha

    # -------------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        start_stage, start_step, ckpt = 0, 0, None
        if resume:
            path = last_checkpoint(self.out_dir)
            if path is not None:
                ckpt = Checkpoint.load(path)
                if ckpt.vocab_id is not None and getattr(self.vocab, "vocab_id", None) not in (None, ckpt.vocab_id):
                    raise ValueError(
                        f"resume {path}: checkpoint vocab_id {ckpt.vocab_id} != current vocabulary {self.vocab.vocab_id}"
                    )
                names = [s.name for s in cfg.stages]
                if ckpt.stage_index >= len(names) or names[ckpt.stage_index] != ckpt.stage_name:
                    raise ValueError(f"resume {path}: checkpoint stage {ckpt.stage_name!r} is not stage "
                                     f"{ckpt.stage_index} of this config ({names})")
                self.model.load_state_dict(ckpt.model)
                self.history = list(ckpt.history)
                self.evaluations = dict(ckpt.evaluations)
                set_rng_state(ckpt.rng)
                if ckpt.stage_done:
                    start_stage, start_step, ckpt = ckpt.stage_index + 1, 0, None
                else:
                    start_stage, start_step = ckpt.stage_index, ckpt.step
        if ckpt is None and start_stage == 0 and cfg.init_from:
            init = Checkpoint.load(cfg.init_from)
            if init.vocab_id is not None and getattr(self.vocab, "vocab_id", None) not in (None, init.vocab_id):
                raise ValueError(f"init_from {cfg.init_from}: vocab_id {init.vocab_id} != current vocabulary {self.vocab.vocab_id}")
            self.model.load_state_dict(init.model)
        self.tracker.log_params(flatten(resolved_dict(cfg)))
        for i in range(start_stage):
            self._global_step_offset += stage_total_steps(cfg.stages[i], len(self.train), self._batch_size(cfg.stages[i]))
        for stage_index in range(start_stage, len(cfg.stages)):
            stopped = self._run_stage(stage_index, start_step if stage_index == start_stage else 0,
                                      ckpt if stage_index == start_stage else None)
            if stopped:
                return TrainResult(self.evaluations, self.history, self.out_dir, stopped_early=True)
        return TrainResult(self.evaluations, self.history, self.out_dir)

    def _validate(self, stage_step: int, n_scenes: int | None = None) -> dict[str, float]:
        """Held-out validation with the current weights, logged as `val/<metric>` at the global step
        (`stage_step`: the running stage's optimiser steps done so far)."""
        cfg = self.cfg
        kwargs = {} if n_scenes is None else {"n_scenes": n_scenes}
        ev = self.evaluator(self.model, self.val, self.vocab, cfg.eval, cfg.seed, cfg.data.max_train_agents,
                            cfg.data.train_radius_m, progress=cfg.progress, **kwargs)
        self.tracker.log_metrics({f"val/{k}": v for k, v in ev.items()}, step=self._global_step_offset + stage_step)
        return ev

    def _render_stage(self, stage_index: int) -> list[Path]:
        """Grid PNGs (log + `eval.render_rollouts` rollouts) of the first `eval.render_scenes`
        validation scenes with the current policy; the same scenes and seed after every stage."""
        from smart_r1.sim.simulate import Simulator, simulate_scenes
        from smart_r1.tokens.tokenizer import Tokenizer
        from smart_r1.viz.pipeline import render_scene_outputs
        from smart_r1.viz.render import RenderConfig

        cfg = self.cfg
        stage = cfg.stages[stage_index]
        scenes = list(self.val.scenes[: cfg.eval.render_scenes])
        sim = Simulator(model=self.model, vocab=self.vocab, tokenizer=Tokenizer(self.vocab), source=stage.name)
        was_training = self.model.training
        self.model.eval()
        try:
            k = int(dict(cfg.eval.sampler_params).get("k", 5))
            rollouts = simulate_scenes(sim, scenes, num_rollouts=cfg.eval.render_rollouts,
                                       seed=derive_seed(cfg.seed, "render") % (2**31), top_k=k)
        finally:
            self.model.train(was_training)
        folder = self.out_dir / "renders" / f"{stage_index:02d}_{stage.name}"
        paths: list[Path] = []
        for scene, ro in zip(scenes, rollouts):
            paths += render_scene_outputs(scene, ro, folder, RenderConfig(frame_px=240),
                                          max_rollouts=cfg.eval.render_rollouts, gif=False)
        self.tracker.log_artifact(folder, artifact_path=f"renders/{folder.name}")
        return paths

    def _run_stage(self, stage_index: int, start_step: int, ckpt: Checkpoint | None) -> bool:
        cfg = self.cfg
        stage = cfg.stages[stage_index]
        bs = self._batch_size(stage)
        total = stage_total_steps(stage, len(self.train), bs)
        objective = get_objective(stage.objective, **stage.params)
        if self.wrap_objective is not None:
            objective = self.wrap_objective(objective)
        device = next(self.model.parameters()).device
        objective.to(device)
        state = build_train_state(self.model, stage, objective, total, learner=cfg.learner)
        if ckpt is not None:
            state.load_state_dict(
                {"model": ckpt.model, "optimizer": ckpt.optimizer, "scheduler": ckpt.scheduler,
                 "reference_model": ckpt.reference_model, "objective": ckpt.objective, "step": ckpt.step},
                objective,
            )
        elif objective.needs_reference:
            state.reference = make_reference(self.model)  # snapshot at stage start (algorithm 1, line 1)
        first = self._global_step_offset
        self.tracker.set_tags({"stage": stage.name,
                               f"stage.{stage_index}": stage_tag(stage, first, first + total, "running")})
        if getattr(objective, "needs_calibration", False):
            alpha = self._calibrate(objective, state, stage_index, bs)
            self.tracker.log_metrics({f"{stage.name}/alpha_calibrated": alpha}, step=self._global_step_offset)
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=state.step, desc=f"{stage_index}:{stage.name} ({stage.objective})",
                       disable=not cfg.progress, dynamic_ncols=True)
        except ImportError:
            bar = None
        # `learner.reference_on: rollout`: the rollout engine scores the sampled tokens with the
        # reference too (collect gets it); `learner`: the update's own teacher-forced pass does.
        collect_reference = state.reference if cfg.learner.reference_on == "rollout" else None
        while state.step < total:
            step = state.step
            torch.manual_seed(derive_seed(cfg.seed, stage_index, step, "torch"))
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, stage_index, step, "rollout"))
            t0 = time.perf_counter()
            inputs = self._inputs(stage_index, step, objective, bs).to(device)
            prefetch = getattr(objective, "prefetch", None)
            if prefetch is not None and step + 1 < total:
                next_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, stage_index, step + 1, "rollout"))
                prefetch(self._inputs(stage_index, step + 1, objective, bs), next_gen, collect_reference)
            experience = objective.collect(self.model, inputs, generator=gen, reference=collect_reference)
            if self.updater is None:
                metrics = update(state, objective, experience)
            else:
                metrics = self.updater(state, objective, experience, stage_index=stage_index, total_steps=total)
            metrics["step_seconds"] = time.perf_counter() - t0
            record = {"stage": stage.name, "stage_index": stage_index, "step": step, **metrics}
            self.history.append(record)
            self.tracker.log_metrics({f"{stage.name}/{k}": v for k, v in metrics.items()},
                                     step=self._global_step_offset + step)
            if bar is not None:
                bar.update(state.step - step)
                bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}")
            self._steps_this_process += 1
            every = cfg.eval.every_n_steps if stage.eval_every_n_steps is None else stage.eval_every_n_steps
            if every > 0 and state.step % every == 0 and state.step < total and self.val is not None and len(self.val) > 0:
                self._validate(state.step, n_scenes=cfg.eval.during_stage_n_scenes or None)
            periodic = stage.checkpoint_every > 0 and state.step % stage.checkpoint_every == 0 and state.step < total
            if periodic:
                save_checkpoint(self._checkpoint(state, objective, stage_index, state.step, False), self.out_dir)
            if self.stop_after_steps is not None and self._steps_this_process >= self.stop_after_steps:
                if bar is not None:
                    bar.close()
                return True
        if bar is not None:
            bar.close()
        if cfg.eval.after_each_stage and self.val is not None and len(self.val) > 0:
            ev = self._validate(total)
            self.evaluations[stage.name] = ev
            self.tracker.log_metrics({f"eval/{stage.name}/{k}": v for k, v in ev.items()},
                                     step=self._global_step_offset + total)
        if cfg.eval.render_scenes > 0 and self.val is not None and len(self.val) > 0:
            try:
                self._render_stage(stage_index)
            except Exception as err:  # noqa: BLE001 - a picture must never end a training run
                warnings.warn(f"stage {stage.name!r}: renders of the validation scenes failed: {err!r}", stacklevel=1)
        self.tracker.set_tags({f"stage.{stage_index}": stage_tag(stage, first, first + total, "done")})
        self._global_step_offset += total
        ck = self._checkpoint(state, objective, stage_index, total, True)
        path = save_checkpoint(ck, self.out_dir, also_as=f"{stage_index:02d}_{stage.name}.pt")
        try:
            self.tracker.log_artifact(str(path.parent / f"{stage_index:02d}_{stage.name}.pt"), artifact_path="checkpoints")
        except TypeError:
            self.tracker.log_artifact(str(path.parent / f"{stage_index:02d}_{stage.name}.pt"))
        return False

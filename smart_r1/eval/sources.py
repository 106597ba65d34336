"""Where rollouts come from in an evaluation: a checkpoint, a registered baseline
(`baseline:<name>`), or an existing rollout file / submission.

Every source answers `rollouts(scene, num_rollouts, seed) -> Rollouts`; seeds are derived per
scene (`scene_seed`) so any scene can be re-simulated alone (resume, renders of the worst
scenes, distributed workers) and gives the same rollouts.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import numpy as np

from smart_r1.data.scene import Scene
from smart_r1.sim.rollouts import Rollouts


def scene_seed(seed: int, scenario_id: str) -> int:
    """Seed of one scene's rollouts: stable across runs, processes and scene order."""
    digest = hashlib.blake2b(f"{int(seed)}:{scenario_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def slug(name: str) -> str:
    """File- and MLflow-safe version of a source name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "source"


class RolloutSource:
    """Base class. `name` is the row label in the report; `kind` one of baseline/checkpoint/rollouts."""

    kind = ""

    def __init__(self, spec: str, name: str | None = None):
        self.spec = str(spec)
        self.name = name or self.spec

    def rollouts(self, scene: Scene, num_rollouts: int, seed: int) -> Rollouts:
        raise NotImplementedError

    def covers(self, scene: Scene) -> bool:
        """Whether this source has rollouts for `scene` (submissions may cover a subset)."""
        return True

    def num_parameters(self) -> int | None:
        """Learned parameters (0 for baselines, None when unknown, e.g. a submission)."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "spec": self.spec}

    def options(self) -> dict:
        """Keyword arguments of `make_source` beyond spec / kind / name (e.g. `top_k`)."""
        return {}

    def spec_tuple(self) -> tuple:
        """Picklable recipe of this source: `source_from_spec(t)` rebuilds it in another process
        (distributed evaluation: each worker loads a checkpoint or rollout file once)."""
        return ("rollouts" if self.kind == "rollouts" else "checkpoint", self.spec, self.name, tuple(sorted(self.options().items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class BaselineSource(RolloutSource):
    kind = "baseline"

    def __init__(self, spec: str, name: str | None = None):
        from smart_r1.sim.baselines import get_baseline

        super().__init__(spec, name)
        self.fn = get_baseline(self.spec)  # fails early on an unknown name

    def rollouts(self, scene: Scene, num_rollouts: int, seed: int) -> Rollouts:
        return self.fn(scene, num_rollouts, scene_seed(seed, scene.scenario_id))

    def num_parameters(self) -> int | None:
        return 0


class CheckpointSource(RolloutSource):
    """A trained checkpoint, simulated with `smart_r1.sim.simulate.simulate_scenes`."""

    kind = "checkpoint"
    DEFAULT_TOP_K = 48  # smart_r1.sim.simulate.simulate_scenes' default

    def __init__(self, spec: str, name: str | None = None, top_k: int | None = None):
        if not Path(spec).exists():
            raise FileNotFoundError(f"checkpoint {spec!r} not found")
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"checkpoint {spec!r}: top_k must be >= 1, got {top_k}")
        p = Path(spec)
        default = f"{p.parent.parent.name}/{p.stem}" if p.name in ("last.pt", "best.pt") else p.stem
        self.top_k = int(top_k) if top_k is not None else self.DEFAULT_TOP_K
        if self.top_k != self.DEFAULT_TOP_K:
            default = f"{default}@top{self.top_k}"  # rows of another sampler never resume as these
        super().__init__(spec, name or default)
        self._n_params: int | None = None

    def options(self) -> dict:
        return {"top_k": self.top_k}

    def rollouts(self, scene: Scene, num_rollouts: int, seed: int) -> Rollouts:
        try:
            from smart_r1.sim.simulate import simulate_scenes
        except ImportError as err:
            raise RuntimeError(
                f"checkpoint {self.spec!r}: simulating needs smart_r1.sim.simulate.simulate_scenes ({err})"
            ) from err
        return simulate_scenes(
            self.spec, [scene], num_rollouts=num_rollouts, seed=scene_seed(seed, scene.scenario_id), top_k=self.top_k
        )[0]

    def num_parameters(self) -> int | None:
        """`num_parameters()` of the model `smart_r1.sim.simulate.load_simulator` rebuilds, else
        the element count of the checkpoint's model state dict."""
        if self._n_params is None:
            try:
                try:
                    from smart_r1.sim.simulate import load_simulator

                    model = load_simulator(self.spec).model
                    self._n_params = int(model.num_parameters() if hasattr(model, "num_parameters") else sum(p.numel() for p in model.parameters()))
                except ImportError:
                    from smart_r1.train.checkpoint import Checkpoint

                    ckpt = Checkpoint.load(self.spec)
                    self._n_params = int(sum(int(np.prod(v.shape)) for v in ckpt.model.values() if hasattr(v, "shape")))
            except Exception as err:  # unreadable: the report shows "-"
                warnings.warn(f"checkpoint {self.spec!r}: parameter count unavailable ({err})", stacklevel=2)
                return None
        return self._n_params


class RolloutFileSource(RolloutSource):
    """Existing rollouts: a submission (.binproto / shards / .tar.gz), an .npz or a directory of .npz.
    With more rollouts than asked for, the first `num_rollouts` are used."""

    kind = "rollouts"

    def __init__(self, spec: str, name: str | None = None):
        from smart_r1.metrics.submission import load_rollouts

        super().__init__(spec, name or Path(spec).name)
        self.by_scene = load_rollouts(spec)
        if not self.by_scene:
            raise ValueError(f"rollouts {spec!r}: no scene rollouts in it")
        self._warned = False

    def covers(self, scene: Scene) -> bool:
        return scene.scenario_id in self.by_scene

    def rollouts(self, scene: Scene, num_rollouts: int, seed: int) -> Rollouts:
        if scene.scenario_id not in self.by_scene:
            raise LookupError(f"rollouts {self.spec!r} hold no rollouts for scene {scene.scenario_id!r}")
        r = self.by_scene[scene.scenario_id]
        if r.n_rollout > num_rollouts:
            return Rollouts(r.scenario_id, r.agent_id, r.trajectories[:num_rollouts])
        if r.n_rollout < num_rollouts and not self._warned:
            warnings.warn(f"rollouts {self.spec!r}: scene {scene.scenario_id!r} has {r.n_rollout} rollouts, {num_rollouts} asked for", stacklevel=2)
            self._warned = True
        return r


def make_source(spec: str, kind: str = "checkpoint", name: str | None = None, top_k: int | None = None) -> RolloutSource:
    """`kind="checkpoint"`: a `baseline:<name>` or a checkpoint file; `kind="rollouts"`: a rollout file.
    `top_k`: sampler top-k of a checkpoint (ignored by baselines and rollout files)."""
    from smart_r1.sim.baselines import is_baseline_spec

    if isinstance(spec, RolloutSource):
        return spec
    if kind == "rollouts":
        return RolloutFileSource(spec, name)
    if kind != "checkpoint":
        raise ValueError(f"unknown source kind {kind!r} (checkpoint, rollouts)")
    if is_baseline_spec(spec):
        return BaselineSource(spec, name)
    return CheckpointSource(spec, name, top_k=top_k)


def source_from_spec(spec_tuple: tuple) -> RolloutSource:
    """Inverse of `RolloutSource.spec_tuple()`."""
    kind, spec, name, options = spec_tuple
    return make_source(spec, kind, name, **dict(options))


def unique_names(sources: list[RolloutSource]) -> list[RolloutSource]:
    """Make row labels unique (a suffix #2, #3 ... on repeats)."""
    seen: dict[str, int] = {}
    for s in sources:
        if s.name in seen:
            seen[s.name] += 1
            s.name = f"{s.name}#{seen[s.name]}"
        else:
            seen[s.name] = 1
    return sources

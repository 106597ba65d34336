"""The `official` metric backend: the installed `waymo_open_dataset` sim-agents code, called
exactly as the leaderboard server would.

Scene + Rollouts -> `ScenarioRollouts` proto -> our validation and the official
`submission_specs.validate_scenario_rollouts` -> `metrics.compute_scenario_metrics_for_bundle`
with the challenge config read from the installed wheel by absolute path (the official
`load_metrics_config()` opens a path relative to the working directory and fails elsewhere).

TensorFlow never loads into the calling process: by default the TF work runs in one persistent
worker subprocess (started lazily on the first `score`, reused for every later scene, closed
by `close()` / context manager / interpreter exit). Requests and replies are pickled over the
worker's stdin / a private copy of its stdout; the worker's own stdout and stderr go to a log
file whose tail is quoted in errors. When `libtcmalloc_minimal.so.4` is installed
(Debian: `libtcmalloc-minimal4`) the worker starts with it in `LD_PRELOAD`: the official
feature code is allocation-bound and runs ~2-3x faster with identical numbers.
`in_process=True` runs everything in this process instead (tests, debugging).

Cost: ~56-190 s per 32-rollout scene with 50 sim agents on a 2-core CPU (see
docs/official_metrics.md). Nothing is cached across calls.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import math
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

from smart_r1.data.protos import NODEPS_REQUIREMENTS, nodeps_wheels
from smart_r1.errors import NonFiniteInputError
from smart_r1.metrics.base import LIKELIHOOD_FIELDS, METRIC_WEIGHTS, MetricBackend, SceneScores, register_backend
from smart_r1.metrics.submission import (
    N_ROLLOUT_OFFICIAL,
    SubmissionValidationError,
    rollouts_to_scenario_rollouts,
    validate_rollouts,
)

__all__ = ["OfficialBackend", "SubmissionValidationError", "OfficialScorerError", "config_path", "load_config"]

# Challenge configs shipped in the wheel, next to sim_agents_metrics/metrics.py.
CONFIG_FILES = {
    2025: "challenge_2025_sim_agents_config.textproto",
    2024: "challenge_2024_config.textproto",
}
TCMALLOC = "libtcmalloc_minimal.so.4"


class OfficialScorerError(RuntimeError):
    """The official scorer (or its worker process) failed; the message names the scene."""


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


# What the official scorer imports (module -> where it comes from) and the file listing the two
# wheels installed with --no-deps (shipped in the package).
OFFICIAL_MODULES = {
    "tensorflow": "the `official` extra (tensorflow-cpu)",
    "tensorflow_probability": "the `official` extra (tensorflow-probability)",
    "sklearn": "the `official` extra (scikit-learn)",
    "tf_keras": "the --no-deps wheel tf-keras",
    "waymo_open_dataset": "the --no-deps wheel waymo-open-dataset-tf-2-12-0",
}


class OfficialScorerMissing(ModuleNotFoundError):
    """The official scorer's packages are not installed; the message gives the install commands."""


def official_install_hint(missing: list[str] | None = None) -> str:
    wheels = " ".join(nodeps_wheels())
    what = ", ".join(f"{m} ({OFFICIAL_MODULES.get(m, '?')})" for m in (missing or [])) or "its packages"
    return (
        f"the official WOSAC scorer cannot run: not installed: {what}. Install the `official` extra and "
        f"then its two wheels without their dependencies (their pins conflict with torch / ray):\n"
        f"    pip install 'smart-r1[official]' && pip install --no-deps {wheels}\n"
        f"(from a checkout: pip install -e '.[official]' && pip install --no-deps -r requirements-nodeps.txt; "
        f"the list is {NODEPS_REQUIREMENTS}). See docs/official_metrics.md."
    )


def check_official_installed() -> None:
    """Raise `OfficialScorerMissing` (naming both --no-deps wheels and the command) if any module
    the official scorer imports is missing; imports nothing."""
    missing = [m for m in OFFICIAL_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise OfficialScorerMissing(official_install_hint(missing))


def official_metrics_dir() -> Path:
    """Directory of the installed `waymo_open_dataset.wdl_limited.sim_agents_metrics` (no import)."""
    check_official_installed()
    spec = importlib.util.find_spec("waymo_open_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise OfficialScorerMissing(official_install_hint(["waymo_open_dataset"]))
    for root in spec.submodule_search_locations:
        d = Path(root) / "wdl_limited" / "sim_agents_metrics"
        if (d / "metrics.py").exists():
            return d
    raise FileNotFoundError(f"no wdl_limited/sim_agents_metrics/metrics.py under {list(spec.submodule_search_locations)}")


def config_path(config_year: int = 2025) -> Path:
    if config_year not in CONFIG_FILES:
        raise ValueError(f"no official sim-agents config for year {config_year}; known: {sorted(CONFIG_FILES)}")
    path = official_metrics_dir() / CONFIG_FILES[config_year]
    if not path.exists():
        raise FileNotFoundError(f"official config {path} is missing from the installed wheel")
    return path


def load_config(config_year: int = 2025):
    """`SimAgentMetricsConfig` of the given challenge year, by absolute path (protobuf only)."""
    check_official_installed()
    from google.protobuf import text_format
    from waymo_open_dataset.protos import sim_agents_metrics_pb2

    path = config_path(config_year)
    config = sim_agents_metrics_pb2.SimAgentMetricsConfig()
    text_format.Parse(path.read_text(), config)
    for name in LIKELIHOOD_FIELDS:  # our weights table must agree with the official file
        got = getattr(config, name.removesuffix("_likelihood")).metametric_weight
        want = METRIC_WEIGHTS[config_year][name]
        if abs(got - want) > 1e-6:
            raise ValueError(f"{path}: {name} weight {got} differs from METRIC_WEIGHTS[{config_year}] {want}")
    return config


# ----------------------------------------------------------------------------------------------
# The TF side (runs in the worker, or here with in_process=True)
# ----------------------------------------------------------------------------------------------


def _compute_official(scenario_bytes: bytes, scenario_rollouts_bytes: bytes, config_bytes: bytes) -> dict:
    """Official validation + metrics on serialized protos. Imports TensorFlow."""
    from waymo_open_dataset.protos import scenario_pb2, sim_agents_metrics_pb2, sim_agents_submission_pb2
    from waymo_open_dataset.utils.sim_agents import submission_specs
    from waymo_open_dataset.wdl_limited.sim_agents_metrics import metrics

    scenario = scenario_pb2.Scenario.FromString(scenario_bytes)
    scenario_rollouts = sim_agents_submission_pb2.ScenarioRollouts.FromString(scenario_rollouts_bytes)
    config = sim_agents_metrics_pb2.SimAgentMetricsConfig.FromString(config_bytes)
    if len(scenario_rollouts.joint_scenes) == submission_specs.get_submission_config(
        submission_specs.ChallengeType.SIM_AGENTS
    ).n_rollouts:
        submission_specs.validate_scenario_rollouts(scenario_rollouts, scenario)
    else:  # fewer rollouts were explicitly allowed by the caller: same checks minus the count
        for joint in scenario_rollouts.joint_scenes:
            submission_specs.validate_joint_scene(joint, scenario, submission_specs.ChallengeType.SIM_AGENTS)
    import resource

    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    result = metrics.compute_scenario_metrics_for_bundle(config, scenario, scenario_rollouts)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "metrics": result.SerializeToString(),
        "seconds": time.perf_counter() - t0,  # wall
        "cpu_user_seconds": r1.ru_utime - r0.ru_utime,
        "cpu_system_seconds": r1.ru_stime - r0.ru_stime,
    }


def _tcmalloc_loaded() -> bool:
    try:
        return "tcmalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def _worker_main() -> None:
    """Loop of the worker process: pickled request dicts in on stdin, replies out on the
    private copy of fd 1 (fd 1 itself goes to stderr so stray prints cannot corrupt the pipe)."""
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    proto_in = sys.stdin.buffer
    import traceback

    while True:
        try:
            request = pickle.load(proto_in)
        except EOFError:
            return
        op = request.get("op")
        try:
            if op == "exit":
                reply = {"ok": True}
            elif op == "ping":
                import tensorflow  # noqa: F401  (load it now: the first score should not pay for it)

                reply = {"ok": True, "pid": os.getpid(), "tcmalloc": _tcmalloc_loaded(), "tensorflow": tensorflow.__version__}
            elif op == "score":
                reply = {"ok": True, **_compute_official(request["scenario"], request["scenario_rollouts"], request["config"])}
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except BaseException as err:  # report everything, keep serving
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        pickle.dump(reply, proto_out, protocol=pickle.HIGHEST_PROTOCOL)
        proto_out.flush()
        if op == "exit":
            return


def tcmalloc_path() -> str | None:
    """Name of the tcmalloc shared library to preload, or None when it is not installed."""
    found = ctypes.util.find_library("tcmalloc_minimal")
    if found:
        return TCMALLOC if "so.4" in found or found == TCMALLOC else found
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        if (Path(d) / TCMALLOC).exists():
            return str(Path(d) / TCMALLOC)
    return None


class _Worker:
    """One persistent subprocess that owns TensorFlow."""

    def __init__(self, use_tcmalloc: bool | None = None, log_path: str | None = None):
        self.use_tcmalloc = use_tcmalloc
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self._log_file = None
        self._lock = threading.Lock()

    def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("CUDA_VISIBLE_DEVICES", "")  # the official code runs on CPU
        lib = tcmalloc_path() if self.use_tcmalloc is not False else None
        if self.use_tcmalloc and lib is None:
            raise OfficialScorerError(
                f"tcmalloc requested but {TCMALLOC} is not installed (apt-get install libtcmalloc-minimal4)"
            )
        if lib:
            env["LD_PRELOAD"] = (lib + " " + env["LD_PRELOAD"]).strip() if env.get("LD_PRELOAD") else lib
        repo_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = repo_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="smart_r1_official_worker_", suffix=".log")
            os.close(fd)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from smart_r1.metrics.official import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            close_fds=True,
        )
        self.info = self._call({"op": "ping"}, what="start the official scorer worker")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_tail(self, n: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:]
        except (OSError, TypeError):
            return ""

    def _call(self, request: dict, what: str) -> dict:
        assert self.proc is not None
        try:
            pickle.dump(request, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            reply = pickle.load(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError) as err:
            code = self.proc.poll()
            self.proc = None
            raise OfficialScorerError(
                f"official scorer worker died during: {what} (exit code {code}, {type(err).__name__}); "
                f"log {self.log_path}:\n{self._log_tail()}"
            ) from err
        if not reply.get("ok"):
            raise OfficialScorerError(f"official scorer failed to {what}: {reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    def request(self, request: dict, what: str) -> dict:
        with self._lock:
            if not self.alive():
                self.start()
            return self._call(request, what)

    def close(self) -> None:
        with self._lock:
            proc, self.proc = self.proc, None
            if proc is not None and proc.poll() is None:
                try:
                    pickle.dump({"op": "exit"}, proc.stdin)
                    proc.stdin.flush()
                    proc.stdin.close()
                    proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired, ValueError):
                    proc.kill()
                    proc.wait()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


def _close_worker(worker: _Worker) -> None:
    worker.close()


# ----------------------------------------------------------------------------------------------
# The backend
# ----------------------------------------------------------------------------------------------


def _scenario_from_scene(scene):
    try:
        from smart_r1.data.convert import scene_to_scenario
    except ImportError as err:
        raise OfficialScorerError(
            f"scene {scene.scenario_id!r}: smart_r1.data.convert.scene_to_scenario is not available ({err}); "
            "pass the original Scenario proto as scenario_proto="
        ) from err
    return scene_to_scenario(scene)


def _check_finite_log(scenario) -> None:
    """`NonFiniteInputError` naming the scene and agent ids when a valid logged state of a
    track has a NaN/inf pose or box: the official metrics would score it without complaint."""
    fields = ("center_x", "center_y", "center_z", "heading", "length", "width", "height")
    bad = [
        int(track.id)
        for track in scenario.tracks
        if any(s.valid and not all(math.isfinite(getattr(s, f)) for f in fields) for s in track.states)
    ]
    if bad:
        raise NonFiniteInputError(
            f"scene {scenario.scenario_id!r}: field tracks.states: NaN/inf pose or box in valid logged states "
            f"of agent ids {bad}; not scored"
        )


def metrics_proto_to_scores(proto, config_year: int, backend: str = "official") -> SceneScores:
    """`sim_agents_metrics_pb2.SimAgentMetrics` -> `SceneScores`."""
    return SceneScores(
        scenario_id=str(proto.scenario_id),
        metametric=float(proto.metametric),
        likelihoods={name: float(getattr(proto, name)) for name in LIKELIHOOD_FIELDS},
        min_average_displacement_error=float(proto.min_average_displacement_error),
        average_displacement_error=float(proto.average_displacement_error),
        simulated_collision_rate=float(proto.simulated_collision_rate),
        simulated_offroad_rate=float(proto.simulated_offroad_rate),
        simulated_traffic_light_violation_rate=float(proto.simulated_traffic_light_violation_rate),
        config_year=config_year,
        backend=backend,
    )


@register_backend("official")
class OfficialBackend(MetricBackend):
    """WOSAC metrics by the installed official `waymo_open_dataset` code.

    `OfficialBackend(config_year=2025, in_process=False, tcmalloc=None, n_rollouts=32)`:
    `tcmalloc` None = preload it when installed, True = require it, False = never.
    `n_rollouts` is the rollout count validation demands (the official rule is 32; None accepts
    any count — the official metric code itself takes any, for cheap checks only).
    Use as a context manager or call `close()` to stop the worker.
    """

    def __init__(
        self,
        config_year: int = 2025,
        in_process: bool = False,
        tcmalloc: bool | None = None,
        n_rollouts: int | None = N_ROLLOUT_OFFICIAL,
        worker_log: str | None = None,
    ):
        super().__init__(config_year)
        self.in_process = in_process
        self.n_rollouts = n_rollouts
        self._config_bytes = load_config(config_year).SerializeToString()
        self._worker = _Worker(use_tcmalloc=tcmalloc, log_path=worker_log)
        self._finalizer = weakref.finalize(self, _close_worker, self._worker)
        self.last_seconds: float | None = None  # official compute wall time of the last scene
        self.last_cpu_seconds: dict | None = None  # {"user": s, "system": s} of the last scene

    # -- lifecycle --
    def close(self) -> None:
        self._worker.close()

    def __enter__(self) -> "OfficialBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def worker_info(self) -> dict:
        """Start the worker if needed; its pid, TensorFlow version and whether tcmalloc is loaded."""
        if self.in_process:
            return {"pid": os.getpid(), "tcmalloc": _tcmalloc_loaded(), "in_process": True}
        if not self._worker.alive():
            self._worker.request({"op": "ping"}, what="start the worker")
        return dict(self._worker.info)

    # -- scoring --
    def prepare(self, scene, rollouts, scenario_proto=None):
        """Validate and build the protos; returns `(scenario, scenario_rollouts)`. Raises
        `SubmissionValidationError` naming the scene and agent ids before any TF work."""
        if scenario_proto is None:
            if scene is None:
                raise ValueError("official backend: need a Scene or scenario_proto")
            scenario = _scenario_from_scene(scene)
        elif isinstance(scenario_proto, (bytes, bytearray)):
            from waymo_open_dataset.protos import scenario_pb2

            scenario = scenario_pb2.Scenario.FromString(bytes(scenario_proto))
        else:
            scenario = scenario_proto
        if scene is not None and str(scene.scenario_id) != str(scenario.scenario_id):
            raise ValueError(f"scene {scene.scenario_id!r} and scenario proto {scenario.scenario_id!r} differ")
        _check_finite_log(scenario)
        proto = rollouts_to_scenario_rollouts(rollouts)
        # Our checks first (they name every offending agent id), then the official ones.
        validate_rollouts(rollouts, scene=scene, scenario=scenario, scenario_rollouts=proto, n_rollouts=self.n_rollouts)
        return scenario, proto

    def score(self, scene, rollouts, scenario_proto=None) -> SceneScores:
        """Official WOSAC metrics of one scene. `scene` may be None when `scenario_proto`
        (a `scenario_pb2.Scenario` or its bytes) is given; with a scene and no proto the
        scenario comes from `smart_r1.data.convert.scene_to_scenario`."""
        scenario, proto = self.prepare(scene, rollouts, scenario_proto)
        sid = str(scenario.scenario_id)
        request = {
            "op": "score",
            "scenario": scenario.SerializeToString(),
            "scenario_rollouts": proto.SerializeToString(),
            "config": self._config_bytes,
        }
        if self.in_process:
            try:
                reply = _compute_official(request["scenario"], request["scenario_rollouts"], request["config"])
            except ValueError as err:
                raise SubmissionValidationError(f"scene {sid!r}: official scorer rejected the rollouts: {err}", sid) from err
        else:
            reply = self._worker.request(request, what=f"score scene {sid!r}")
        from waymo_open_dataset.protos import sim_agents_metrics_pb2

        self.last_seconds = float(reply["seconds"])
        self.last_cpu_seconds = {"user": float(reply["cpu_user_seconds"]), "system": float(reply["cpu_system_seconds"])}
        result = sim_agents_metrics_pb2.SimAgentMetrics.FromString(reply["metrics"])
        return metrics_proto_to_scores(result, self.config_year)

    def score_many(self, scenes, rollouts_list, scenario_protos=None, progress: bool = False) -> list[SceneScores]:
        scenes = list(scenes) if scenes is not None else [None] * len(rollouts_list)
        protos = list(scenario_protos) if scenario_protos is not None else [None] * len(scenes)
        if not (len(scenes) == len(rollouts_list) == len(protos)):
            raise ValueError(f"score_many: {len(scenes)} scenes, {len(rollouts_list)} rollouts, {len(protos)} protos")
        items = zip(scenes, rollouts_list, protos)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, total=len(scenes), desc="official WOSAC metrics", unit="scene")
        return [self.score(s, r, p) for s, r, p in items]



# ----------------------------------------------------------------------------------------------
# Small scenes for cheap live checks of the official scorer
# ----------------------------------------------------------------------------------------------


def cut_down_scenario(scenario, n_extra_agents: int = 2, map_radius_m: float = 30.0, scenario_id: str | None = None):
    """A smaller copy of a `scenario_pb2.Scenario` that the official scorer handles in seconds:
    the SDC, the tracks to predict and the `n_extra_agents` other sim agents nearest to the SDC
    at the current step (tracks not valid then are dropped), and only the map features with a
    point within `map_radius_m` of a kept agent's logged positions. Dynamic map states are kept
    whole. It is a new scene (its official scores differ from the original's), id
    `scenario_id` (default `<id>_small`)."""
    import numpy as np
    from waymo_open_dataset.protos import scenario_pb2

    cur = int(scenario.current_time_index)
    tracks = list(scenario.tracks)
    sdc = int(scenario.sdc_track_index)
    must = {sdc} | {int(t.track_index) for t in scenario.tracks_to_predict}
    sdc_xy = np.array([tracks[sdc].states[cur].center_x, tracks[sdc].states[cur].center_y])  # [2]
    others = [i for i, t in enumerate(tracks) if t.states[cur].valid and i not in must]
    dist = [float(np.hypot(tracks[i].states[cur].center_x - sdc_xy[0], tracks[i].states[cur].center_y - sdc_xy[1])) for i in others]
    keep = sorted(must | {others[j] for j in np.argsort(dist)[:n_extra_agents]})
    new_index = {old: new for new, old in enumerate(keep)}

    out = scenario_pb2.Scenario()
    out.CopyFrom(scenario)
    out.scenario_id = scenario_id or f"{scenario.scenario_id}_small"
    del out.tracks[:]
    out.tracks.extend(tracks[i] for i in keep)
    out.sdc_track_index = new_index[sdc]
    del out.tracks_to_predict[:]
    for t in scenario.tracks_to_predict:
        out.tracks_to_predict.add(track_index=new_index[int(t.track_index)], difficulty=t.difficulty)
    del out.objects_of_interest[:]
    kept_ids = {tracks[i].id for i in keep}
    out.objects_of_interest.extend(i for i in scenario.objects_of_interest if i in kept_ids)

    pts = np.array(
        [[s.center_x, s.center_y] for i in keep for s in tracks[i].states if s.valid], np.float64
    )  # [n_valid_state, 2]
    r2 = map_radius_m**2
    del out.map_features[:]
    kept_lanes = set()
    for feature in scenario.map_features:
        kind = feature.WhichOneof("feature_data")
        if kind is None:
            continue
        body = getattr(feature, kind)
        if kind == "stop_sign":
            xy = np.array([[body.position.x, body.position.y]], np.float64)  # [1, 2]
        else:
            line = body.polygon if kind in ("crosswalk", "speed_bump", "driveway") else body.polyline
            xy = np.array([[p.x, p.y] for p in line], np.float64).reshape(-1, 2)  # [n_point, 2]
        if xy.shape[0] == 0:
            continue
        near = ((xy[:, None, :] - pts[None, :, :]) ** 2).sum(-1).min(axis=1) <= r2  # [n_point]
        if not near.any():
            continue
        new = out.map_features.add()
        new.CopyFrom(feature)
        if kind in ("lane", "road_line", "road_edge"):
            # Keep the longest run of consecutive points near the agents (same feature id).
            best, start = (0, 0), None
            for j, flag in enumerate(np.append(near, False).tolist()):
                if flag and start is None:
                    start = j
                elif not flag and start is not None:
                    best = max(best, (j - start, start))
                    start = None
            length, first = best
            if length < 2:
                del out.map_features[-1]
                continue
            points = list(body.polyline)[first : first + length]
            target = getattr(new, kind)
            del target.polyline[:]
            target.polyline.extend(points)
        if kind == "lane":
            kept_lanes.add(int(feature.id))
    for state in out.dynamic_map_states:
        lanes = [ls for ls in state.lane_states if int(ls.lane) in kept_lanes]
        del state.lane_states[:]
        state.lane_states.extend(lanes)
    return out

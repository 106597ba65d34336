"""WOSAC submissions: `Rollouts` <-> official `sim_agents_submission_pb2` protos.

- `rollouts_to_scenario_rollouts` / `scenario_rollouts_to_rollouts`: one scene's rollouts as a
  `ScenarioRollouts` proto (one `JointScene` per rollout, one `SimulatedTrajectory` per agent
  holding center x/y/z and heading for the 80 simulated steps) and back.
- `validate_rollouts`: our own checks (scene id, agent ids, step count, NaN, rollout count),
  then the official `submission_specs.validate_scenario_rollouts`; failures raise
  `SubmissionValidationError` naming the scene and the agent ids.
- `build_submission` / `write_submission_shards` / `export_submission`: the
  `SimAgentsChallengeSubmission` protos with the leaderboard metadata, sharded like the official
  instructions (`submission.binproto-00000-of-00002`, ...), packed into a `.tar.gz`.
- `read_submission`: a single `.binproto`, a list of shards, a directory of shards or the
  `.tar.gz` -> `{scenario_id: Rollouts}`.
- `save_rollouts_npz` / `load_rollouts_npz`: the simulator's on-disk rollouts format.

Nothing here imports TensorFlow: the protos and `submission_specs` are pure protobuf.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from smart_r1.data.atomic import atomic_output
from smart_r1.data.scene import CURRENT_TIME_INDEX_WOMD, N_FUTURE_STEP
from smart_r1.data.tfrecord import expand_paths, looks_like_tfrecord, write_records
from smart_r1.errors import InputError
from smart_r1.sim.rollouts import TRAJ_HEADING, TRAJ_X, TRAJ_Y, TRAJ_Z, Rollouts

N_ROLLOUT_OFFICIAL = 32  # submission_specs: parallel rollouts per scene
SHARD_BASENAME = "submission.binproto"


class SubmissionValidationError(InputError):
    """Rollouts that the official leaderboard would reject. The message names the scene and the
    agent ids; the attributes hold them for programs."""

    def __init__(
        self,
        message: str,
        scenario_id: str = "",
        missing_ids: Sequence[int] = (),
        extra_ids: Sequence[int] = (),
        bad_ids: Sequence[int] = (),
    ):
        super().__init__(message)
        self.scenario_id = scenario_id
        self.missing_ids = sorted(int(i) for i in missing_ids)
        self.extra_ids = sorted(int(i) for i in extra_ids)
        self.bad_ids = sorted(int(i) for i in bad_ids)


def _pb():
    from waymo_open_dataset.protos import sim_agents_submission_pb2

    return sim_agents_submission_pb2


def _scenario_pb():
    from waymo_open_dataset.protos import scenario_pb2

    return scenario_pb2


# ----------------------------------------------------------------------------------------------
# Rollouts <-> ScenarioRollouts
# ----------------------------------------------------------------------------------------------


def rollouts_to_scenario_rollouts(rollouts: Rollouts):
    """`Rollouts` -> `sim_agents_submission_pb2.ScenarioRollouts` (one joint scene per rollout)."""
    pb = _pb()
    traj = np.asarray(rollouts.trajectories, dtype=np.float32)  # [n_rollout, n_agent, n_step, 4]
    ids = [int(i) for i in rollouts.agent_id]  # [n_agent]
    out = pb.ScenarioRollouts(scenario_id=str(rollouts.scenario_id))
    for r in range(traj.shape[0]):
        joint = out.joint_scenes.add()
        for a, agent in enumerate(ids):
            t = traj[r, a]  # [n_step, 4]
            joint.simulated_trajectories.add(
                center_x=t[:, TRAJ_X].tolist(),
                center_y=t[:, TRAJ_Y].tolist(),
                center_z=t[:, TRAJ_Z].tolist(),
                heading=t[:, TRAJ_HEADING].tolist(),
                object_id=agent,
            )
    return out


def scenario_rollouts_to_rollouts(scenario_rollouts, source: str = "") -> Rollouts:
    """`ScenarioRollouts` proto -> `Rollouts`. Agent order follows the first joint scene; every
    joint scene must hold the same agent ids and every trajectory the same number of steps."""
    where = f"scene {scenario_rollouts.scenario_id!r}" + (f" ({source})" if source else "")
    scenes = list(scenario_rollouts.joint_scenes)
    if not scenes:
        raise SubmissionValidationError(f"{where}: field joint_scenes is empty", scenario_rollouts.scenario_id)
    ids = [int(t.object_id) for t in scenes[0].simulated_trajectories]  # [n_agent]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SubmissionValidationError(
            f"{where}: joint scene 0 lists agent ids {dup} more than once", scenario_rollouts.scenario_id, bad_ids=dup
        )
    lengths = {}
    for s, joint in enumerate(scenes):
        for t in joint.simulated_trajectories:
            for name in ("center_x", "center_y", "center_z", "heading"):
                lengths.setdefault(len(getattr(t, name)), set()).add(int(t.object_id))
    if len(lengths) != 1:
        common = max(lengths, key=lambda n: len(lengths[n]))
        bad = sorted(set().union(*(v for n, v in lengths.items() if n != common)))
        raise SubmissionValidationError(
            f"{where}: trajectories of different lengths {sorted(lengths)} (steps); agent ids not of the "
            f"common length {common}: {bad}",
            scenario_rollouts.scenario_id,
            bad_ids=bad,
        )
    n_step = next(iter(lengths)) if lengths else 0
    traj = np.zeros((len(scenes), len(ids), n_step, 4), np.float32)  # [n_rollout, n_agent, n_step, 4]
    index = {agent: a for a, agent in enumerate(ids)}
    for s, joint in enumerate(scenes):
        got = [int(t.object_id) for t in joint.simulated_trajectories]
        if sorted(got) != sorted(ids):
            missing = set(ids) - set(got)
            extra = set(got) - set(ids)
            raise SubmissionValidationError(
                f"{where}: joint scene {s} has other agents than joint scene 0: missing ids {sorted(missing)}, "
                f"extra ids {sorted(extra)}",
                scenario_rollouts.scenario_id,
                missing_ids=missing,
                extra_ids=extra,
            )
        for t in joint.simulated_trajectories:
            a = index[int(t.object_id)]
            traj[s, a, :, TRAJ_X] = t.center_x
            traj[s, a, :, TRAJ_Y] = t.center_y
            traj[s, a, :, TRAJ_Z] = t.center_z
            traj[s, a, :, TRAJ_HEADING] = t.heading
    return Rollouts(scenario_id=str(scenario_rollouts.scenario_id), agent_id=np.asarray(ids, np.int64), trajectories=traj)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def skeleton_scenario(scene):
    """A `Scenario` proto holding only what `submission_specs` reads (scenario id, track ids and
    types, per-step validity, SDC index, tracks to predict). Used to run the official submission
    checks against a `Scene` without a full Scene -> Scenario conversion."""
    sp = _scenario_pb()
    out = sp.Scenario(scenario_id=str(scene.scenario_id), current_time_index=int(scene.current_time_index))
    out.timestamps_seconds.extend(np.asarray(scene.timestamps_seconds, np.float64).tolist())
    for a in range(scene.n_agent):
        track = out.tracks.add(id=int(scene.agent_id[a]), object_type=int(scene.agent_type[a]))
        for valid in scene.agent_valid[a].tolist():  # [n_step]
            track.states.add(valid=bool(valid))
    out.sdc_track_index = int(scene.sdc_index)
    order = np.asarray(scene.tracks_to_predict_order, np.int64)
    if order.size == 0:
        order = np.flatnonzero(scene.tracks_to_predict)
    for row in order.tolist():
        out.tracks_to_predict.add(track_index=int(row), difficulty=int(scene.tracks_to_predict_difficulty[row]))
    return out


def _sim_agent_ids(scene=None, scenario=None) -> np.ndarray:
    """Ids of the agents that must be simulated (valid at step 10), track order.  # [n_sim] int64"""
    if scenario is not None:
        from waymo_open_dataset.utils.sim_agents import submission_specs

        return np.asarray(
            submission_specs.get_sim_agent_ids(scenario, submission_specs.ChallengeType.SIM_AGENTS), np.int64
        )
    if scene is None:
        raise ValueError("need a Scene or a Scenario proto to know the agents to simulate")
    if int(scene.current_time_index) != CURRENT_TIME_INDEX_WOMD:
        raise SubmissionValidationError(
            f"scene {scene.scenario_id!r}: current_time_index {scene.current_time_index}, WOSAC needs "
            f"{CURRENT_TIME_INDEX_WOMD}",
            scene.scenario_id,
        )
    return scene.sim_agent_ids()


def validate_rollouts(
    rollouts: Rollouts,
    scene=None,
    scenario=None,
    scenario_rollouts=None,
    n_rollouts: int | None = N_ROLLOUT_OFFICIAL,
) -> None:
    """Raise `SubmissionValidationError` if the leaderboard would reject `rollouts` for this scene.

    Needs `scene` (a `Scene`) or `scenario` (a `scenario_pb2.Scenario`). Checks, all reported
    at once: scenario id, rollout count (`n_rollouts`, None to skip: the official rule is 32),
    step count (80), duplicate / missing / extra agent ids, non-finite values. Then runs the
    official `submission_specs.validate_scenario_rollouts` on the proto (`scenario_rollouts`,
    built from `rollouts` if not given) against `scenario` or a skeleton of `scene`.
    """
    from waymo_open_dataset.utils.sim_agents import submission_specs

    scenario_id = str(scenario.scenario_id) if scenario is not None else str(scene.scenario_id)
    where = f"scene {scenario_id!r}" + (f" ({scene.source})" if scene is not None and getattr(scene, "source", "") else "")
    ids = np.asarray(rollouts.agent_id, np.int64)  # [n_agent]
    traj = rollouts.trajectories  # [n_rollout, n_agent, n_step, 4]
    sim_ids = _sim_agent_ids(scene, scenario)  # [n_sim]
    problems: list[str] = []
    missing = sorted(set(sim_ids.tolist()) - set(ids.tolist()))
    extra = sorted(set(ids.tolist()) - set(sim_ids.tolist()))
    dup = sorted({int(i) for i in ids if (ids == i).sum() > 1})
    bad: list[int] = []
    if str(rollouts.scenario_id) != scenario_id:
        problems.append(f"rollouts are for scene {rollouts.scenario_id!r}")
    if n_rollouts is not None and rollouts.n_rollout != n_rollouts:
        problems.append(f"{rollouts.n_rollout} rollouts, the official rule is {n_rollouts}")
    if rollouts.n_step != N_FUTURE_STEP:
        problems.append(
            f"trajectories have {rollouts.n_step} steps, expected {N_FUTURE_STEP} (agent ids {ids.tolist()})"
        )
    if missing:
        problems.append(f"missing sim agent ids {missing} (must simulate every agent valid at step {CURRENT_TIME_INDEX_WOMD})")
    if extra:
        problems.append(f"extra agent ids {extra} (not valid at step {CURRENT_TIME_INDEX_WOMD} or not in the scene)")
    if dup:
        problems.append(f"agent ids {dup} appear more than once")
    finite = np.isfinite(traj).all(axis=(0, 2, 3))  # [n_agent]
    if not finite.all():
        bad = ids[~finite].tolist()
        n_bad = int((~np.isfinite(traj)).sum())
        problems.append(f"{n_bad} NaN/inf values in the trajectories of agent ids {bad}")
    if problems:
        raise SubmissionValidationError(
            f"{where}: invalid rollouts: " + "; ".join(problems),
            scenario_id,
            missing_ids=missing,
            extra_ids=extra,
            bad_ids=sorted(set(bad) | set(dup)),
        )
    # The official checks (a second opinion on everything above the NaN check).
    proto = scenario_rollouts if scenario_rollouts is not None else rollouts_to_scenario_rollouts(rollouts)
    original = scenario if scenario is not None else skeleton_scenario(scene)
    try:
        if n_rollouts == N_ROLLOUT_OFFICIAL:
            submission_specs.validate_scenario_rollouts(proto, original)
        else:  # same checks minus the rollout count
            if not proto.HasField("scenario_id"):
                raise ValueError("Missing `scenario_id` field.")
            for joint in proto.joint_scenes:
                submission_specs.validate_joint_scene(joint, original, submission_specs.ChallengeType.SIM_AGENTS)
    except ValueError as err:
        raise SubmissionValidationError(
            f"{where}: official submission_specs rejected the rollouts (agent ids {ids.tolist()}): {err}", scenario_id
        ) from err


# ----------------------------------------------------------------------------------------------
# Submissions
# ----------------------------------------------------------------------------------------------


@dataclass
class SubmissionMetadata:
    """Leaderboard metadata of a `SimAgentsChallengeSubmission` (official proto field names)."""

    account_name: str
    unique_method_name: str
    authors: list[str] = field(default_factory=list)
    affiliation: str = ""
    description: str = ""
    method_link: str = ""
    uses_lidar_data: bool = False
    uses_camera_data: bool = False
    uses_public_model_pretraining: bool = False
    public_model_names: list[str] = field(default_factory=list)
    num_model_parameters: str = ""
    acknowledge_complies_with_closed_loop_requirement: bool = True

    def problems(self) -> list[str]:
        out = []
        if not self.account_name:
            out.append("account_name is empty")
        if not self.unique_method_name:
            out.append("unique_method_name is empty")
        return out


def build_submission(scenario_rollouts: Iterable, metadata: SubmissionMetadata):
    """`SimAgentsChallengeSubmission` with `metadata` and the given `ScenarioRollouts` protos
    (or `Rollouts`, converted)."""
    pb = _pb()
    meta = dataclasses.asdict(metadata)
    authors = meta.pop("authors")
    public_names = meta.pop("public_model_names")
    sub = pb.SimAgentsChallengeSubmission(submission_type=pb.SimAgentsChallengeSubmission.SIM_AGENTS_SUBMISSION, **meta)
    sub.authors.extend(authors)
    sub.public_model_names.extend(public_names)
    for item in scenario_rollouts:
        if isinstance(item, Rollouts):
            item = rollouts_to_scenario_rollouts(item)
        sub.scenario_rollouts.append(item)
    return sub


def shard_name(index: int, n_shard: int, basename: str = SHARD_BASENAME) -> str:
    return f"{basename}-{index:05d}-of-{n_shard:05d}"


@dataclass
class ExportReport:
    """What `export_submission` did."""

    out_path: Path | None
    shard_names: list[str]
    n_scenes: int
    packed_scenario_ids: list[str]
    invalid: dict[str, str]  # scenario_id -> validation error message (not packed)


def export_submission(
    items: Sequence[tuple],
    out_path: str | os.PathLike,
    metadata: SubmissionMetadata,
    scenes_per_shard: int = 16,
    skip_invalid: bool = False,
    n_rollouts: int | None = N_ROLLOUT_OFFICIAL,
    progress: bool = False,
) -> ExportReport:
    """Validate and pack a WOSAC submission.

    `items`: `(scene_or_scenario, rollouts)` pairs, the first a `Scene` or a `scenario_pb2.Scenario`.
    Every rollout set is validated (`validate_rollouts`). If any fails, `SubmissionValidationError`
    lists every failing scene and nothing is written — unless `skip_invalid`, then the failing
    scenes are left out (reported in `ExportReport.invalid`) and the rest is packed.
    Shards `submission.binproto-0000i-of-0000n` (each a full `SimAgentsChallengeSubmission` with
    the metadata) go into the `.tar.gz` at `out_path`.
    """
    problems = metadata.problems()
    if problems:
        raise ValueError("submission metadata: " + "; ".join(problems))
    sp = _scenario_pb()
    valid: list = []
    invalid: dict[str, str] = {}
    seen: set[str] = set()
    iterator = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc="validate rollouts", unit="scene")
    for scene_like, rollouts in iterator:
        is_proto = isinstance(scene_like, sp.Scenario)
        sid = str(scene_like.scenario_id)
        if sid in seen:
            invalid[sid] = f"scene {sid!r}: rollouts given twice"
            continue
        seen.add(sid)
        proto = rollouts_to_scenario_rollouts(rollouts)
        try:
            validate_rollouts(
                rollouts,
                scene=None if is_proto else scene_like,
                scenario=scene_like if is_proto else None,
                scenario_rollouts=proto,
                n_rollouts=n_rollouts,
            )
        except SubmissionValidationError as err:
            invalid[sid] = str(err)
            continue
        valid.append(proto)
    if invalid and not skip_invalid:
        raise SubmissionValidationError(
            f"{len(invalid)} of {len(items)} rollout sets fail validation, nothing packed:\n  "
            + "\n  ".join(invalid.values()),
            scenario_id=",".join(invalid),
        )
    if not valid:
        raise SubmissionValidationError("no valid rollout set to pack", scenario_id=",".join(invalid))
    n_shard = max(1, -(-len(valid) // max(1, scenes_per_shard)))
    out_path = Path(out_path)
    names = []
    with atomic_output(out_path, fsync=False) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for i in range(n_shard):
            chunk = valid[i * scenes_per_shard : (i + 1) * scenes_per_shard]
            data = build_submission(chunk, metadata).SerializeToString()
            info = tarfile.TarInfo(shard_name(i, n_shard))
            info.size = len(data)
            info.mtime = 0  # reproducible archives
            tar.addfile(info, io.BytesIO(data))
            names.append(info.name)
    return ExportReport(out_path, names, len(items), [p.scenario_id for p in valid], invalid)


def _iter_submission_blobs(path: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """(name, serialized SimAgentsChallengeSubmission) for every shard in a .tar.gz, a directory,
    a glob or a single file."""
    text = str(path)
    p = Path(text)
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.is_file() and ".binproto" in q.name)
        if not files:
            raise FileNotFoundError(f"{p}: no *.binproto* shard in this directory")
        for q in files:
            yield str(q), q.read_bytes()
        return
    if not p.exists():
        files = sorted(glob.glob(text))
        if not files:
            raise FileNotFoundError(f"submission {text}: no such file")
        for q in files:
            yield from _iter_submission_blobs(q)
        return
    if tarfile.is_tarfile(p):
        with tarfile.open(p, "r:*") as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
            if not members:
                raise InputError(f"{p}: archive holds no file")
            for m in members:
                yield f"{p}:{m.name}", tar.extractfile(m).read()
        return
    yield str(p), p.read_bytes()


def _parse_submission(name: str, blob: bytes):
    from google.protobuf.message import DecodeError

    try:
        return _pb().SimAgentsChallengeSubmission.FromString(blob)
    except DecodeError as err:
        raise InputError(f"{name}: not a SimAgentsChallengeSubmission proto ({err})") from err


def read_submission_protos(path: str | os.PathLike) -> list:
    """All `SimAgentsChallengeSubmission` shards of a submission (file, directory, glob or .tar.gz)."""
    return [_parse_submission(name, blob) for name, blob in _iter_submission_blobs(path)]


def read_submission(path: str | os.PathLike, invalid: dict[str, str] | None = None) -> dict[str, Rollouts]:
    """A submission (single .binproto, shards, directory, or .tar.gz) -> `{scenario_id: Rollouts}`.
    A scenario id present in two shards is an error. A scene whose rollouts cannot be read
    consistently (e.g. agents missing in some joint scenes) raises `SubmissionValidationError`,
    or, when an `invalid` dict is given, is left out and its message stored there (by id)."""
    out: dict[str, Rollouts] = {}
    for name, blob in _iter_submission_blobs(path):
        sub = _parse_submission(name, blob)
        for sr in sub.scenario_rollouts:
            if sr.scenario_id in out or (invalid is not None and sr.scenario_id in invalid):
                raise InputError(f"{name}: scenario {sr.scenario_id!r} appears twice in the submission")
            try:
                out[sr.scenario_id] = scenario_rollouts_to_rollouts(sr, source=name)
            except SubmissionValidationError as err:
                if invalid is None:
                    raise
                invalid[sr.scenario_id] = str(err)
    return out


# ----------------------------------------------------------------------------------------------
# npz rollouts (what the simulator writes)
# ----------------------------------------------------------------------------------------------


def save_rollouts_npz(rollouts: Rollouts, path: str | os.PathLike) -> Path:
    """Write `{scenario_id, agent_id, trajectories}` to `path` (.npz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        scenario_id=np.asarray(str(rollouts.scenario_id)),
        agent_id=np.asarray(rollouts.agent_id, np.int64),  # [n_agent]
        trajectories=np.asarray(rollouts.trajectories, np.float32),  # [n_rollout, n_agent, n_step, 4]
    )
    return path


def load_rollouts_npz(path: str | os.PathLike) -> Rollouts:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise InputError(f"{path}: not a rollouts .npz ({type(err).__name__}: {err})") from err
    if not hasattr(data, "files"):
        raise InputError(f"{path}: not a rollouts .npz (holds one {type(data).__name__}, not named arrays)")
    with data:
        for key in ("scenario_id", "agent_id", "trajectories"):
            if key not in data.files:
                raise InputError(f"{path}: rollouts npz lacks field {key!r} (has {data.files})")
        return Rollouts(
            scenario_id=str(data["scenario_id"]),
            agent_id=data["agent_id"],  # [n_agent]
            trajectories=data["trajectories"],  # [n_rollout, n_agent, n_step, 4]
        )


def load_rollouts(path: str | os.PathLike) -> dict[str, Rollouts]:
    """Rollouts from a directory of .npz files, one .npz, or an existing submission
    (.binproto / shards / .tar.gz) -> `{scenario_id: Rollouts}`."""
    p = Path(path)
    if p.is_dir():
        npz = sorted(p.glob("*.npz"))
        if npz:
            out = {}
            for f in npz:
                r = load_rollouts_npz(f)
                if r.scenario_id in out:
                    raise InputError(f"{f}: scenario {r.scenario_id!r} already read from another file")
                out[r.scenario_id] = r
            return out
        return read_submission(p)
    if p.suffix == ".npz":
        r = load_rollouts_npz(p)
        return {r.scenario_id: r}
    return read_submission(p)


# ----------------------------------------------------------------------------------------------
# Scenario protos from files: TFRecord I/O lives in smart_r1.data.tfrecord / scenario_io
# ----------------------------------------------------------------------------------------------


def iter_scenario_protos(paths) -> Iterator:
    """`scenario_pb2.Scenario` protos from TFRecord files (plain or gzip, CRC-checked by
    `smart_r1.data.scenario_io.read_scenario_protos`) or single serialized Scenario files.
    `paths`: anything `smart_r1.data.tfrecord.expand_paths` takes. Errors name the file, the
    record and its byte offset."""
    from smart_r1.data.convert import parse_scenario
    from smart_r1.data.scenario_io import read_scenario_protos

    for path in expand_paths(paths):
        if looks_like_tfrecord(path):
            yield from read_scenario_protos(path)
        else:
            yield parse_scenario(Path(path).read_bytes(), path, 0, 0)


def read_scenarios(spec, only_ids: Iterable[str] | None = None) -> dict:
    """`{scenario_id: scenario_pb2.Scenario}` from a path, glob, comma list, directory or list of
    TFRecord files (`smart_r1.data.scenario_io.read_scenario_protos`: CRC-checked, gzip).
    `only_ids`: keep just these scenes. A scenario id seen twice is an error; a spec that
    matches no file is an error."""
    from smart_r1.data.scenario_io import read_scenario_protos

    wanted = set(only_ids) if only_ids is not None else None
    out: dict = {}
    for proto in read_scenario_protos(spec):
        sid = str(proto.scenario_id)
        if wanted is not None and sid not in wanted:
            continue
        if sid in out:
            raise InputError(f"scenes {spec}: scenario {sid!r} appears twice")
        out[sid] = proto
    return out


def write_scenarios_tfrecord(path: str | os.PathLike, scenarios: Iterable) -> Path:
    """Write `scenario_pb2.Scenario` protos to one uncompressed TFRecord file (atomically,
    `smart_r1.data.tfrecord.write_records`)."""
    path = Path(path)
    write_records(path, (scenario.SerializeToString() for scenario in scenarios), compress=False)
    return path

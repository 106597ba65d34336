"""Where things run and where state lives on a Ray cluster (shared by the driver, the SMART-R1
collector and the distributed evaluation; imports nothing else of `learner`).

- `connect_ray(address)`: join a cluster (`auto` inside `ray job submit`, `RAY_ADDRESS`) or start a
  private local instance.
- Placement: `actor_options(cpus, resources)` adds the runtime's custom resources (e.g.
  `rollout_resources: {rollout: 1}`) to an actor's options, so rollout and scorer actors land on
  the nodes that advertise them (`ray start --resources '{"rollout": 8}'`, a KubeRay worker
  group's `rayStartParams.resources`). `on_this_node()` pins the small bookkeeping actors (the
  weight store, the asset store) to the driver's node: they hold the run's state (weight
  versions, the vocabulary's object ref), so losing a rollout node must not take them along.
- `node_of(actor)`: the node id an actor runs on, asked from Ray's actor table (GCS).
"""

from __future__ import annotations

import json
import os
from typing import Any


def connect_ray(address: str | None = None, num_cpus: int | None = None, object_store_bytes: int = 500_000_000) -> bool:
    """Connect to / start Ray. Returns True when this call started a private local instance."""
    import ray

    for k, v in (("RAY_USAGE_STATS_ENABLED", "0"), ("MLFLOW_DISABLE_TELEMETRY", "true")):
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    # A private instance: an in-process cluster has no remote clients, auth adds nothing.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), object_store_memory=object_store_bytes,
             include_dashboard=False)
    return True


def parse_resources(value: Any, what: str = "resources") -> dict[str, float]:
    """A custom-resource dict from a dict, a JSON string or None (`{}`). Clear error otherwise."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what}: expected a JSON object like '{{\"rollout\": 1}}', got {value!r}") from err
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in value.items()):
        raise ValueError(f"{what}: expected a mapping of resource name -> amount, got {value!r}")
    bad = sorted(k for k in value if k in ("CPU", "GPU", "memory", "object_store_memory"))
    if bad:
        raise ValueError(f"{what}: {bad} are set by the *_cpus / *_gpus keys, not as custom resources")
    return {k: float(v) for k, v in value.items()}


def actor_options(num_cpus: float | None = None, resources: dict | None = None, **opts) -> dict:
    """Ray actor options with the custom resources added (none: Ray places the actor anywhere).
    With custom resources the actors are also spread over the nodes that have them (`SPREAD`),
    so one lost node takes as few of a pool's actors as possible."""
    out = dict(opts)
    if num_cpus is not None:
        out["num_cpus"] = num_cpus
    res = parse_resources(resources)
    if res:
        out["resources"] = res
        out.setdefault("scheduling_strategy", "SPREAD")
    return out


def on_this_node() -> dict:
    """Actor options pinning an actor to the calling process's node (hard affinity)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)}


def node_of(actor) -> str | None:
    """Node id (hex) the actor currently runs on, from Ray's actor table; None if not placed."""
    from ray._private.state import actors as actor_table

    info = actor_table(actor._actor_id.hex())
    node = (info or {}).get("Address", {}).get("NodeID")
    return node or None


# ----------------------------------------------------------------------------------------------
# Where a run's state lives (checkpoints, vocabulary, scene cache, results)
# ----------------------------------------------------------------------------------------------

WORKING_DIR_MARK = "/runtime_resources/working_dir_files/"  # Ray's per-job copy of --working-dir


def is_uri(path: str | os.PathLike) -> bool:
    s = str(path)
    return "://" in s and not s.startswith("file://")


def resolve_output_dir(output_dir: str, storage: str | None = None, cwd: str | None = None) -> str:
    """Where a run writes: `output_dir` as given when absolute or a URI (`s3://`, `gs://`,
    `hdfs://`, anything pyarrow.fs opens); a relative one goes under `storage`
    (`runtime.storage` or `SMART_R1_STORAGE`: a shared path or URI every node reaches). Inside a
    `ray job submit` working-dir copy a relative `output_dir` without storage is refused: that
    copy is deleted with the cluster, and the checkpoints with it."""
    out = str(output_dir)
    if out.startswith("file://"):
        out = out[len("file://"):]
    if is_uri(out) or os.path.isabs(out):
        return out
    storage = storage or os.environ.get("SMART_R1_STORAGE") or None
    if storage:
        if storage.startswith("file://"):
            storage = storage[len("file://"):]
        return f"{storage.rstrip('/')}/{out}" if is_uri(storage) else os.path.join(os.path.abspath(storage), out)
    cwd = cwd or os.getcwd()
    if WORKING_DIR_MARK in cwd + "/":
        raise ValueError(
            f"output_dir {out!r} is relative and this job runs in Ray's temporary working-dir copy ({cwd}), which is "
            "deleted with the cluster: set runtime.storage (or the SMART_R1_STORAGE environment variable) to a shared "
            "path or an object-store URI (s3://bucket/smart-r1), or make output_dir absolute")
    return os.path.abspath(out)


class RunStorage:
    """A run's output directory on a local/shared path (used in place) or an object-store URI
    (pyarrow.fs): a local staging copy that `pull()` fills from the URI (resume) and `push()`
    mirrors back (new or changed files), every `sync_seconds` in the background and at the end."""

    def __init__(self, target: str, sync_seconds: float = 60.0, stage_root: str | None = None, stage: bool | None = None):
        """stage: None = stage URIs only; True also stages a `file://` target (same pyarrow code path; tests)."""
        import hashlib
        import tempfile

        self.target = str(target)
        self.remote = is_uri(self.target) if stage is None else bool(stage)
        self.sync_seconds = float(sync_seconds)
        if self.remote:
            root = stage_root or os.path.join(tempfile.gettempdir(), "smart_r1_stage")
            self.local_dir = os.path.join(root, hashlib.sha1(self.target.encode()).hexdigest()[:16])
        else:
            self.local_dir = self.target
        os.makedirs(self.local_dir, exist_ok=True)
        self._pushed: dict[str, tuple] = {}
        self._stop = None
        self._thread = None

    def _fs(self):
        from pyarrow import fs

        return fs.FileSystem.from_uri(self.target)

    def pull(self) -> int:
        """Copy the remote run directory into the staging dir (nothing to do for a path). Returns files copied."""
        if not self.remote:
            return 0
        from pyarrow import fs

        remote_fs, root = self._fs()
        info = remote_fs.get_file_info(root)
        if info.type == fs.FileType.NotFound:
            return 0
        n = 0
        for f in remote_fs.get_file_info(fs.FileSelector(root, recursive=True)):
            if f.type != fs.FileType.File:
                continue
            rel = os.path.relpath(f.path, root)
            dst = os.path.join(self.local_dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            fs.copy_files(f.path, dst, source_filesystem=remote_fs, destination_filesystem=fs.LocalFileSystem())
            st = os.stat(dst)
            self._pushed[rel] = (st.st_size, st.st_mtime_ns)
            n += 1
        return n

    def push(self) -> int:
        """Upload new or changed files of the staging dir. Returns files uploaded."""
        if not self.remote:
            return 0
        from pyarrow import fs

        remote_fs, root = self._fs()
        n = 0
        for dirpath, _dirs, files in os.walk(self.local_dir):
            for name in files:
                src = os.path.join(dirpath, name)
                rel = os.path.relpath(src, self.local_dir)
                if name.endswith(".tmp"):
                    continue
                try:
                    st = os.stat(src)
                except FileNotFoundError:  # replaced meanwhile: next push
                    continue
                if self._pushed.get(rel) == (st.st_size, st.st_mtime_ns):
                    continue
                dst = f"{root.rstrip('/')}/{rel}"
                remote_fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
                fs.copy_files(src, dst, source_filesystem=fs.LocalFileSystem(), destination_filesystem=remote_fs)
                self._pushed[rel] = (st.st_size, st.st_mtime_ns)
                n += 1
        return n

    def start(self) -> "RunStorage":
        if self.remote and self.sync_seconds > 0:
            import threading

            self._stop = threading.Event()

            def loop():
                while not self._stop.wait(self.sync_seconds):
                    try:
                        self.push()
                    except Exception as err:  # noqa: BLE001 - keep training; the final push reports
                        import logging

                        logging.getLogger(__name__).warning("storage sync to %s failed: %s", self.target, err)

            self._thread = threading.Thread(target=loop, name="smart-r1-storage-sync", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=30)
        self.push()

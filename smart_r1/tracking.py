"""Experiment tracking façade: an asynchronous MLflow tracker with an on-disk buffer, or a null one.

Training code calls a `Tracker` and never waits on the network:

    tracker = make_tracker(config, experiment="smart-r1", run_name="demo", run_id=ckpt.mlflow_run_id)
    tracker.log_params({"lr": 5e-5})
    tracker.log_metrics({"loss": 0.3}, step=10)
    tracker.log_artifact("ckpt/step_10.pt", artifact_path="checkpoints")
    ... checkpoint.mlflow_run_id = tracker.run_id   (None until the server has been reached once)
    tracker.close()

Every call only puts a record on an in-memory queue. A background thread sends the records to
the MLflow server in order. When the server is unreachable the records are appended to a JSONL
buffer on disk (`<buffer_dir>/<key>.jsonl`, artifacts snapshotted next to it) and replayed, in
order, as soon as the server answers its health check again. A tracker built later with the same
run id (resume) replays what an earlier process left in the buffer. Errors inside the thread are
logged, never raised into training.

`make_tracker` accepts a tracking URI string, or a config (dict / object) holding a `tracking`
section: `{uri, experiment, run_name, enabled, buffer_dir}`; with no URI configured and no
`MLFLOW_TRACKING_URI` in the environment it returns a `NullTracker`. This module imports no Ray.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

DEFAULT_BUFFER_DIR = Path(os.environ.get("SMART_R1_TRACKING_BUFFER", ".smart_r1_runs/tracking_buffer"))
_MAX_PARAM_LEN = 6000  # MLflow param value limit is 6000 chars
_MAX_BATCH = 900  # MLflow log_batch limit is 1000 metrics


class Tracker:
    """Interface every tracker implements (also the null tracker's no-op behaviour)."""

    run_id: str | None = None
    experiment: str = ""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def register_model(self, name: str, artifact_path: str, tags: Mapping[str, Any] | None = None) -> None:
        """Register `runs:/<run>/<artifact_path>` (logged before with `log_artifact`) as a model version."""

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far has reached the server; False if still buffered."""
        return True

    def close(self, timeout: float | None = 30.0, status: str = "FINISHED") -> None:
        pass

    @property
    def dashboard_url(self) -> str | None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(status="FAILED" if exc_type else "FINISHED")


class NullTracker(Tracker):
    """Tracks nothing (tracking disabled or not configured)."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _server_up(uri: str, timeout: float = 2.0) -> bool:
    """Cheap reachability check: `GET <uri>/health` for http(s) servers; local stores are always up."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class MlflowTracker(Tracker):
    """Asynchronous MLflow tracker (see module docstring)."""

    def __init__(
        self,
        uri: str,
        experiment: str = "smart-r1",
        run_name: str | None = None,
        run_id: str | None = None,
        buffer_dir: str | os.PathLike | None = None,
        retry_interval: float = 2.0,
        tags: Mapping[str, Any] | None = None,
    ):
        # Fail fast on a dead server (the default retries back off for minutes); the buffer covers it.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.uri = uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_id = run_id
        self._resume_run_id = run_id
        self.retry_interval = float(retry_interval)
        self.buffer_dir = Path(buffer_dir) if buffer_dir is not None else DEFAULT_BUFFER_DIR
        self.buffer_dir.mkdir(parents=True, exist_ok=True)
        # The buffer file is keyed by the run id when known (resume), else by a fresh key.
        self._key = run_id or f"pending-{uuid.uuid4().hex[:12]}"
        self._buffer_path = self.buffer_dir / f"{self._key}.jsonl"
        self._queue: queue.Queue = queue.Queue()
        self._client = None
        self._experiment_id: str | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._stop = threading.Event()
        self._seq = 0
        self.n_buffered = 0  # records written to the disk buffer (for tests / reports)
        self.n_sent = 0
        self.n_dropped = 0  # records the server rejected (bad values), logged and skipped
        if tags:
            self.set_tags(tags)
        self._thread = threading.Thread(target=self._run, name="smart-r1-tracker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API (non-blocking)
    def _put(self, kind: str, payload: dict) -> None:
        if self._closed:
            log.warning("tracker closed; dropping %s record", kind)
            return
        with self._lock:
            self._seq += 1
            self._idle.clear()
            self._queue.put({"kind": kind, "seq": self._seq, **payload})

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {k: str(v)[:_MAX_PARAM_LEN] for k, v in _flatten(params).items()}
        self._put("params", {"params": flat})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        vals = {}
        for k, v in _flatten(metrics).items():
            try:
                vals[k] = float(v)
            except (TypeError, ValueError):
                log.warning("tracker: metric %r is not a number (%r); skipped", k, v)
        self._put("metrics", {"metrics": vals, "step": int(step or 0), "ts": ts})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        path = Path(path)
        if not path.exists():
            log.warning("tracker: artifact %s does not exist; skipped", path)
            return
        # Snapshot now: the caller may overwrite the file (e.g. `last.pt`) before it is uploaded.
        snap = self.buffer_dir / f"{self._key}.artifacts" / f"{uuid.uuid4().hex[:8]}" / path.name
        snap.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, snap)
        else:
            shutil.copy2(path, snap)  # a copy, not a link: torch.save rewrites files in place
        self._put("artifact", {"path": str(snap), "artifact_path": artifact_path, "snapshot": True})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._put("tags", {"tags": {k: str(v) for k, v in _flatten(tags).items()}})

    def register_model(self, name: str, artifact_path: str, tags: Mapping[str, Any] | None = None) -> None:
        self._put("register", {"name": name, "artifact_path": artifact_path, "tags": dict(tags or {})})

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the queue is drained and the disk buffer replayed. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._idle.is_set() and self._queue.empty() and not self._buffer_path.exists():
                return True
            if not self._thread.is_alive():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            self._idle.wait(0.05)
            time.sleep(0.02)

    def close(self, timeout: float | None = 30.0, status: str = "FINISHED") -> None:
        if self._closed:
            return
        self._put("end", {"status": status})
        self._closed = True
        ok = self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=5.0)
        if not ok:
            log.warning(
                "tracker: server %s unreachable at close; %d record(s) kept in %s (replayed by the next "
                "tracker resuming run %s)", self.uri, self._pending_count(), self._buffer_path, self.run_id
            )

    @property
    def dashboard_url(self) -> str | None:
        if not self.uri.startswith(("http://", "https://")):
            return None
        if self.run_id and self._experiment_id:
            return f"{self.uri.rstrip('/')}/#/experiments/{self._experiment_id}/runs/{self.run_id}"
        return self.uri

    # ------------------------------------------------------------------ background thread
    def _pending_count(self) -> int:
        if not self._buffer_path.exists():
            return 0
        with open(self._buffer_path) as f:
            return sum(1 for _ in f)

    def _append_buffer(self, rec: dict) -> None:
        with open(self._buffer_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
        self.n_buffered += 1

    def _ensure_run(self) -> None:
        """Connect, find/create the experiment and the run (or re-open the stored one)."""
        if self._client is not None and self.run_id is not None:
            return
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        if self._resume_run_id:
            run = client.get_run(self._resume_run_id)  # raises if unknown: surfaced in the log
            self._experiment_id = run.info.experiment_id
            if run.info.status != "RUNNING":
                client.update_run(self._resume_run_id, status="RUNNING")
            self.run_id = self._resume_run_id
        else:
            exp = client.get_experiment_by_name(self.experiment)
            self._experiment_id = exp.experiment_id if exp else client.create_experiment(self.experiment)
            run = client.create_run(self._experiment_id, run_name=self.run_name)
            self.run_id = run.info.run_id
            # Re-key the buffer to the run id so a resumed tracker finds it.
            new_path = self.buffer_dir / f"{self.run_id}.jsonl"
            if self._buffer_path.exists():
                self._buffer_path.rename(new_path)
            self._buffer_path = new_path
        self._client = client

    def _send(self, rec: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException

        client, run_id = self._client, self.run_id
        kind = rec["kind"]
        try:
            if kind == "metrics":
                items = [Metric(k, v, rec["ts"], rec["step"]) for k, v in rec["metrics"].items()]
                for i in range(0, len(items), _MAX_BATCH):
                    client.log_batch(run_id, metrics=items[i : i + _MAX_BATCH], synchronous=True)
            elif kind == "params":
                items = [Param(k, v) for k, v in rec["params"].items()]
                for i in range(0, len(items), 100):
                    client.log_batch(run_id, params=items[i : i + 100], synchronous=True)
            elif kind == "tags":
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in rec["tags"].items()], synchronous=True)
            elif kind == "artifact":
                p = Path(rec["path"])
                if p.is_dir():
                    client.log_artifacts(run_id, str(p), rec.get("artifact_path"))
                elif p.exists():
                    client.log_artifact(run_id, str(p), rec.get("artifact_path"))
                else:
                    log.warning("tracker: artifact snapshot %s vanished; skipped", p)
                if rec.get("snapshot"):
                    shutil.rmtree(p.parent, ignore_errors=True)
            elif kind == "register":
                name = rec["name"]
                try:
                    client.create_registered_model(name)
                except MlflowException:
                    pass  # already exists
                source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{rec['artifact_path']}"
                client.create_model_version(name, source=source, run_id=run_id, tags=rec.get("tags") or None)
            elif kind == "end":
                client.set_terminated(run_id, status=rec["status"])
            self.n_sent += 1
        except MlflowException as err:
            # A server answer that is not a connectivity problem (bad value, duplicate param):
            # retrying would fail forever. Log and drop this record.
            if _is_connectivity_error(err):
                raise ConnectionError(str(err)) from err
            self.n_dropped += 1
            log.warning("tracker: MLflow rejected %s record (seq %s): %s", kind, rec.get("seq"), err)

    def _replay_buffer(self) -> bool:
        """Send buffered records in order; keep the unsent tail on failure. True if emptied."""
        if not self._buffer_path.exists():
            return True
        with open(self._buffer_path) as f:
            lines = [ln for ln in f if ln.strip()]
        for i, line in enumerate(lines):
            try:
                self._send(json.loads(line))
            except Exception as err:  # noqa: BLE001 - any failure means: keep buffering
                log.info("tracker: replay interrupted (%s); %d record(s) kept", err, len(lines) - i)
                tmp = self._buffer_path.with_suffix(".tmp")
                with open(tmp, "w") as f:
                    f.writelines(lines[i:])
                os.replace(tmp, self._buffer_path)
                return False
        self._buffer_path.unlink()
        return True

    def _connected(self) -> bool:
        if not _server_up(self.uri):
            return False
        try:
            self._ensure_run()
            return True
        except Exception as err:  # noqa: BLE001
            if self._resume_run_id and "RESOURCE_DOES_NOT_EXIST" in str(err):
                log.error("tracker: stored run id %s not found on %s; starting a new run", self._resume_run_id, self.uri)
                self._resume_run_id = None
                return self._connected()
            log.info("tracker: cannot reach MLflow at %s (%s)", self.uri, err)
            return False

    def _run(self) -> None:
        # Pick up a buffer an earlier process left for this run (resume).
        up = self._connected()
        last_try = time.monotonic()
        while True:
            try:
                rec = self._queue.get(timeout=0.2)
            except queue.Empty:
                rec = None
            try:
                if rec is not None:
                    if up and not self._buffer_path.exists():
                        try:
                            self._send(rec)
                        except Exception as err:  # noqa: BLE001
                            log.info("tracker: MLflow unreachable (%s); buffering to %s", err, self._buffer_path)
                            up = False
                            self._append_buffer(rec)
                    else:
                        self._append_buffer(rec)
                if self._buffer_path.exists() and time.monotonic() - last_try >= (0 if up else self.retry_interval):
                    last_try = time.monotonic()
                    up = self._connected() and self._replay_buffer()
                elif not up and time.monotonic() - last_try >= self.retry_interval:
                    last_try = time.monotonic()
                    up = self._connected()
            except Exception as err:  # noqa: BLE001 - the thread must never die
                log.warning("tracker: unexpected error %r", err)
                up = False
            with self._lock:
                if self._queue.empty() and rec is not None:
                    self._idle.set()
                elif self._queue.empty():
                    self._idle.set()
            if self._stop.is_set() and self._queue.empty():
                return


def _is_connectivity_error(err: Exception) -> bool:
    """True when the server could not be reached (retry later); False when it answered and
    rejected the record (drop it, never retry forever)."""
    from mlflow.exceptions import RestException

    if isinstance(err, RestException):  # the server answered with a JSON error
        return getattr(err, "error_code", "") == "TEMPORARILY_UNAVAILABLE"
    text = str(err)
    if "failed with exception" in text or "failed with timeout exception" in text:
        return True  # requests-level failure: refused, reset, DNS, timeout, retries exhausted
    return any(f"failed with error code {code}" in text for code in (502, 503, 504))


def _tracking_section(config: Any) -> dict:
    if config is None:
        return {}
    if isinstance(config, str):
        return {"uri": config}
    if isinstance(config, Mapping):
        sec = config.get("tracking", config)
        return dict(sec) if isinstance(sec, Mapping) else {}
    sec = getattr(config, "tracking", None)
    if sec is None:
        return {}
    if isinstance(sec, Mapping):
        return dict(sec)
    return {k: getattr(sec, k) for k in dir(sec) if not k.startswith("_") and not callable(getattr(sec, k))}


def make_tracker(
    config_or_uri: Any = None,
    experiment: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    buffer_dir: str | os.PathLike | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Tracker:
    """MLflow tracker for the configured URI (config `tracking.uri`, else `MLFLOW_TRACKING_URI`),
    or a `NullTracker` when tracking is disabled or nothing is configured.

    `run_id` (e.g. from a checkpoint) continues that MLflow run instead of starting a new one.
    """
    sec = _tracking_section(config_or_uri)
    if sec.get("enabled", True) is False:
        return NullTracker()
    uri = sec.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri or str(uri).lower() in ("none", "null", "off", "disabled"):
        return NullTracker()
    return MlflowTracker(
        str(uri),
        experiment=experiment or sec.get("experiment") or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "smart-r1",
        run_name=run_name or sec.get("run_name"),
        run_id=run_id or sec.get("run_id"),
        buffer_dir=buffer_dir or sec.get("buffer_dir"),
        retry_interval=float(sec.get("retry_interval", 2.0)),
        tags=tags,
    )

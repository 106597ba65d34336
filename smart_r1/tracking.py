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

What a run looks like (docs/runtime.md, "What MLflow shows"):
- params: every resolved config value, flattened with list indices (`stages.2.params.beta`), never
  cut (`flatten`);
- metrics: finite numbers only (NaN / inf values are skipped, never logged), plus MLflow's
  `system/...` metrics (CPU, memory, disk, network; GPU when `pynvml` is installed) sampled by a
  `SystemMetricsMonitor` while the run is open (`system_metrics=False` turns it off);
- the experiment carries `mlflow.experimentKind = custom_model_development`, so the MLflow 3 UI
  opens it as a model-training experiment (runs, charts, models), not as a GenAI one;
- `log_model(dir, ...)`: an MLflow model directory (e.g. `smart_r1.policy_model.save_policy_model`)
  becomes a logged model of the run with its metrics, a registered model version with a
  description, and the `champion` alias when its metric beats the current champion's. A run
  registers at most one version per registered model (a resumed run re-sending it is skipped).

`make_tracker` accepts a tracking URI string, or a config (dict / object) holding a `tracking`
section: `{uri, experiment, run_name, enabled, buffer_dir, system_metrics}`; with no URI configured
and no `MLFLOW_TRACKING_URI` in the environment it returns a `NullTracker`. This module imports no Ray.
"""

from __future__ import annotations

import json
import logging
import math
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
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # the MLflow 3 UI's model-training mode
UI_MODE_QUERY = "workflowType=machine_learning"  # URL query: open the MLflow 3 UI in model-training mode
CHAMPION_ALIAS = "champion"
RUN_ID_TAG = "smart_r1.run_id"  # on model versions: the run that registered it (one version per run)


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

    def log_model(self, model_dir: str | os.PathLike, registered_name: str, metrics: Mapping[str, float] | None = None,
                  description: str = "", champion_score: float | None = None,
                  tags: Mapping[str, Any] | None = None, step: int = 0, name: str = "policy") -> None:
        """Log the MLflow model saved in `model_dir` as a logged model of this run (`metrics`, run
        metric names, re-logged at `step` linked to the model, are its model metrics) and register it
        as a version of `registered_name` with `description`; the alias `champion` moves to it when
        `champion_score` (higher is better, kept as the version tag `champion_score`) beats the
        current champion's."""

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


def flatten(d: Mapping[str, Any], prefix: str = "", lists: bool = True) -> dict[str, Any]:
    """Nested mappings (and, with `lists`, lists: `stages.2.params.beta`) -> one level of dotted
    keys. Empty containers stay as values (`freeze: []`) so every config field has a param."""
    out: dict[str, Any] = {}
    items = enumerate(d) if isinstance(d, list) else d.items()
    for k, v in items:
        key = f"{prefix}{k}"
        if (isinstance(v, Mapping) or (lists and isinstance(v, list))) and len(v) > 0:
            out.update(flatten(v, key + ".", lists))
        else:
            out[key] = v
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    return flatten(d, prefix, lists=False)


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
        system_metrics: bool = True,
        system_metrics_interval: float = 5.0,
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
        self.n_skipped_nonfinite = 0  # NaN / inf metric values never sent
        self.system_metrics = bool(system_metrics)
        self.system_metrics_interval = float(system_metrics_interval)
        self._system_monitor = None
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
        flat = {}
        for k, v in flatten(params).items():
            text = str(v)
            if len(text) > _MAX_PARAM_LEN:  # MLflow's hard limit; only free text can reach it
                log.warning("tracker: param %r is %d chars, over MLflow's %d; cut", k, len(text), _MAX_PARAM_LEN)
            flat[k] = text[:_MAX_PARAM_LEN]
        self._put("params", {"params": flat})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        vals = {}
        for k, v in _flatten(metrics).items():
            try:
                x = float(v)
            except (TypeError, ValueError):
                log.warning("tracker: metric %r is not a number (%r); skipped", k, v)
                continue
            if not math.isfinite(x):  # an undefined value is left out, never logged as NaN
                self.n_skipped_nonfinite += 1
                log.debug("tracker: metric %r is %r at step %s; not logged", k, x, step)
                continue
            vals[k] = x
        if vals:
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

    def log_model(self, model_dir: str | os.PathLike, registered_name: str, metrics: Mapping[str, float] | None = None,
                  description: str = "", champion_score: float | None = None,
                  tags: Mapping[str, Any] | None = None, step: int = 0, name: str = "policy") -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "MLmodel").exists():
            raise ValueError(f"log_model: {model_dir} is not an MLflow model directory (no MLmodel file)")
        snap = self.buffer_dir / f"{self._key}.artifacts" / uuid.uuid4().hex[:8] / model_dir.name
        shutil.copytree(model_dir, snap)
        finite = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self._put("model", {"path": str(snap), "registered_name": registered_name, "name": name, "metrics": finite,
                            "description": description,
                            "champion_score": None if champion_score is None or not math.isfinite(champion_score)
                            else float(champion_score), "tags": {k: str(v) for k, v in (tags or {}).items()},
                            "step": int(step), "ts": int(time.time() * 1000)})

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
        self._stop_system_metrics()
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
            # MLflow >= 3.6 keeps the UI mode (GenAI / model training) per browser, default GenAI;
            # the query opens the run in model-training mode (older UIs read the experiment tag).
            return f"{self.uri.rstrip('/')}/#/experiments/{self._experiment_id}/runs/{self.run_id}?{UI_MODE_QUERY}"
        return self.uri

    # ------------------------------------------------------------------ background thread
    def _start_system_metrics(self) -> None:
        if not self.system_metrics or self._closed:
            return
        if self._system_monitor is not None and self._system_monitor._process is not None \
                and self._system_monitor._process.is_alive():
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # resume_logging: continue the `system/...` step axis of a resumed (or reconnected) run
            self._system_monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.system_metrics_interval,
                                                        resume_logging=True, tracking_uri=self.uri)
            self._system_monitor.start()
        except Exception as err:  # noqa: BLE001 - monitoring is optional, never fatal
            log.warning("tracker: system metrics not logged (%s)", err)
            self._system_monitor = None

    def _stop_system_metrics(self) -> None:
        mon, self._system_monitor = self._system_monitor, None
        if mon is not None:
            try:
                mon.finish()
            except Exception as err:  # noqa: BLE001
                log.info("tracker: stopping system metrics: %s", err)

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
            self._experiment_id = exp.experiment_id if exp else client.create_experiment(
                self.experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            if exp is not None and exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                client.set_experiment_tag(self._experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            run = client.create_run(self._experiment_id, run_name=self.run_name)
            self.run_id = run.info.run_id
            # Re-key the buffer to the run id so a resumed tracker finds it.
            new_path = self.buffer_dir / f"{self.run_id}.jsonl"
            if self._buffer_path.exists():
                self._buffer_path.rename(new_path)
            self._buffer_path = new_path
        self._client = client
        self._start_system_metrics()

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
                if self._version_of_run(name) is None:
                    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{rec['artifact_path']}"
                    client.create_model_version(name, source=source, run_id=run_id,
                                                tags={RUN_ID_TAG: run_id, **(rec.get("tags") or {})})
            elif kind == "model":
                self._send_model(rec)
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

    def _version_of_run(self, name: str):
        """The version of registered model `name` this run registered already (resume), or None."""
        for mv in self._client.search_model_versions(f"name='{name}'"):
            if mv.run_id == self.run_id or (mv.tags or {}).get(RUN_ID_TAG) == self.run_id:
                return mv
        return None

    def _send_model(self, rec: dict) -> None:
        from mlflow.entities import LoggedModelOutput, Metric
        from mlflow.exceptions import MlflowException

        client, run_id, name = self._client, self.run_id, rec["registered_name"]
        p = Path(rec["path"])
        if self._version_of_run(name) is not None:
            log.info("tracker: run %s already registered a version of %s; not registering again", run_id, name)
            shutil.rmtree(p.parent, ignore_errors=True)
            return
        model = client.create_logged_model(self._experiment_id, name=rec["name"], source_run_id=run_id,
                                           tags=rec["tags"] or None)
        client.log_model_artifacts(model.model_id, str(p))
        client.finalize_logged_model(model.model_id, "READY")
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, rec["step"])])
        metrics = [Metric(k, v, rec["ts"], rec["step"], model_id=model.model_id) for k, v in rec["metrics"].items()]
        if metrics:
            client.log_batch(run_id, metrics=metrics, synchronous=True)
        try:
            client.create_registered_model(name, description=rec["description"] or None)
        except MlflowException:
            pass  # already exists
        score = rec.get("champion_score")
        tags = {RUN_ID_TAG: run_id, **rec["tags"]}
        if score is not None:
            tags["champion_score"] = repr(score)
        mv = client.create_model_version(name, source=f"models:/{model.model_id}", run_id=run_id, tags=tags,
                                         description=rec["description"] or None, model_id=model.model_id)
        if score is not None:
            try:
                current = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
                best = float(current.tags.get("champion_score", "nan"))
            except MlflowException:
                best = float("nan")  # no champion yet
            if not math.isfinite(best) or score > best:
                client.set_registered_model_alias(name, CHAMPION_ALIAS, mv.version)
        shutil.rmtree(p.parent, ignore_errors=True)

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
        system_metrics=bool(sec.get("system_metrics", True)),
        system_metrics_interval=float(sec.get("system_metrics_interval", 5.0)),
    )

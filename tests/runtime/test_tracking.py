"""The tracking façade against a real MLflow server: async logging, buffering while the
server is down, ordered replay when it returns, resume of the same run."""

from __future__ import annotations

import time

import pytest

from smart_r1.mlflow_server import start_local_server
from smart_r1.tracking import MlflowTracker, NullTracker, make_tracker


def test_make_tracker_null_without_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert isinstance(make_tracker(None), NullTracker)
    assert isinstance(make_tracker({"tracking": {"uri": "http://x", "enabled": False}}), NullTracker)
    # An explicit "off" URI in the config wins over the environment, in every spelling.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    for off in ("none", "None", "null", "off", "disabled"):
        t = make_tracker({"tracking": {"uri": off}})
        assert isinstance(t, NullTracker), off
        t.log_metrics({"a": 1.0}, step=0)  # a no-op that never blocks or buffers
        assert t.flush(timeout=0) and t.run_id is None and t.dashboard_url is None
        t.close()


def test_buffer_while_down_then_replay_and_resume(tmp_path):
    from mlflow import MlflowClient

    root = tmp_path / "mlflow"
    server = start_local_server(root)
    port = server.port
    art = tmp_path / "vocab.txt"
    art.write_text("v1")
    tracker = make_tracker(server.uri, experiment="rt-test", run_name="buffer", buffer_dir=tmp_path / "buf")
    assert isinstance(tracker, MlflowTracker)
    tracker.log_params({"model": {"preset": "tiny"}, "lr": 5e-5})
    for step in range(5):
        tracker.log_metrics({"loss": 10.0 - step}, step=step)
    assert tracker.flush(timeout=60)
    run_id = tracker.run_id
    assert run_id

    server.stop()
    # Server down: calls return immediately; records go to the disk buffer.
    t0 = time.monotonic()
    for step in range(5, 15):
        tracker.log_metrics({"loss": 10.0 - step}, step=step)
    tracker.log_artifact(art, artifact_path="vocab")
    art.write_text("overwritten after logging")  # the snapshot taken at log time is what is uploaded
    assert time.monotonic() - t0 < 0.5
    assert not tracker.flush(timeout=3)
    assert tracker.n_buffered > 0
    assert (tmp_path / "buf" / f"{run_id}.jsonl").exists()

    server = start_local_server(root, port=port)
    try:
        assert tracker.flush(timeout=60), "buffer not replayed after the server came back"
        tracker.close()
        client = MlflowClient(server.uri)
        hist = client.get_metric_history(run_id, "loss")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == list(range(15))
        assert sorted(m.value for m in hist) == [10.0 - s for s in reversed(range(15))]
        run = client.get_run(run_id)
        assert run.data.params["model.preset"] == "tiny"
        assert run.info.status == "FINISHED"
        files = [f.path for f in client.list_artifacts(run_id, "vocab")]
        assert files == ["vocab/vocab.txt"]
        local = client.download_artifacts(run_id, "vocab/vocab.txt", str(tmp_path / "dl"))
        assert open(local).read() == "v1"

        # Resume: same run id continues the same run.
        resumed = make_tracker(server.uri, experiment="rt-test", run_id=run_id, buffer_dir=tmp_path / "buf")
        resumed.log_params({"lr": 1.0})  # a changed param value: the server rejects it ...
        resumed.log_metrics({"loss": -1.0}, step=15)  # ... and logging goes on (dropped, not retried forever)
        resumed.set_tags({"resumed": "yes"})
        resumed.close()
        assert resumed.n_dropped == 1
        assert resumed.run_id == run_id
        run = client.get_run(run_id)
        assert run.data.tags["resumed"] == "yes"
        assert len(client.get_metric_history(run_id, "loss")) == 16
        assert len(client.search_runs([run.info.experiment_id])) == 1
    finally:
        server.stop()


def test_server_down_at_start_and_register_model(tmp_path):
    """No server when the tracker starts: the run is created once it appears, nothing lost."""
    from mlflow import MlflowClient
    from smart_r1.mlflow_server import free_port

    port = free_port()
    tracker = make_tracker(f"http://127.0.0.1:{port}", experiment="late", run_name="late", buffer_dir=tmp_path / "buf")
    tracker.log_metrics({"x": 1.0}, step=0)
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"weights")
    tracker.log_artifact(model_file, artifact_path="model")
    tracker.register_model("smart-r1-test", "model")
    assert tracker.run_id is None
    server = start_local_server(tmp_path / "mlflow", port=port)
    try:
        assert tracker.flush(timeout=60)
        tracker.close()
        client = MlflowClient(server.uri)
        assert client.get_metric_history(tracker.run_id, "x")[0].value == 1.0
        versions = client.search_model_versions("name='smart-r1-test'")
        assert len(versions) == 1 and versions[0].run_id == tracker.run_id
    finally:
        server.stop()

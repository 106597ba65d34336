"""The cluster manifests and the image definition, checked without Kubernetes or docker (neither is
available here): they parse, hold the fields KubeRay's RayJob schema requires (ray.io/v1), and
agree with each other and with the runtime (resources the actors ask for exist on some node
group, the runtime JSON is a valid `RuntimeConfig`, every pod gets the token and the MLflow URI,
the images are the Dockerfile's, and the Dockerfile installs the pinned set + the --no-deps wheels)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / "cluster" / name).read_text()) if d]


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _start_resources(params: dict) -> dict:
    raw = params.get("resources")
    if raw is None:
        return {}
    val = json.loads(raw)  # KubeRay's format: a JSON string inside quotes
    return json.loads(val) if isinstance(val, str) else val


def test_rayjob_has_the_required_fields_and_a_consistent_layout():
    from learner.runtime import RuntimeConfig

    docs = _docs("kuberay-rayjob.yaml")
    job = next(d for d in docs if d["kind"] == "RayJob")
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert isinstance(spec["entrypoint"], str) and "smart-r1 train" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", cluster["rayVersion"])
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and all(isinstance(v, str) for v in head["rayStartParams"].values())
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"learner-gpu", "rollout-cpu", "scorer-cpu"} <= set(groups)
    templates = [head["template"], *[g["template"] for g in groups.values()], spec["submitterPodTemplate"]]
    for t in templates:
        for c in _containers(t):
            assert c["name"] and c["image"].startswith("ghcr.io/") and ":" in c["image"]
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] in secrets
            assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")
            assert set(c["resources"]) == {"requests", "limits"}
    resources = {}
    for name, g in groups.items():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert all(isinstance(v, str) for v in g["rayStartParams"].values())
        resources[name] = _start_resources(g["rayStartParams"])
    # The learner: entrypoint placed on the GPU group by its custom resource, GPU requested there.
    learner_res = json.loads(spec["entrypointResources"])
    assert set(learner_res) <= set(resources["learner-gpu"])
    (c,) = _containers(groups["learner-gpu"]["template"])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["image"].endswith(":cuda")
    assert groups["learner-gpu"]["rayStartParams"]["num-gpus"] == "1" and spec["entrypointNumGpus"] == 1
    # The runtime JSON is valid, and the resources the actors ask for exist on CPU groups.
    env_vars = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    runtime = json.loads(env_vars["SMART_R1_RUNTIME"])
    storage = runtime.pop("storage")
    assert storage.startswith(("s3://", "gs://", "/"))
    rt = RuntimeConfig.from_dict(runtime)
    assert set(rt.rollout_resources) <= set(resources["rollout-cpu"])
    assert set(rt.scorer_resources) <= set(resources["scorer-cpu"])


def test_cluster_launcher_matches_the_layout():
    (cfg,) = _docs("cluster-launcher.yaml")
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "docker"):
        assert key in cfg
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert types["learner_gpu"]["resources"]["GPU"] == 1 and types["learner_gpu"]["resources"]["learner"] == 1
    assert types["learner_gpu"]["docker"]["worker_image"].endswith(":cuda")
    assert "rollout" in types["rollout_cpu"]["resources"] and "scorer" in types["scorer_cpu"]["resources"]
    rayjob_images = {c["image"].rsplit(":", 1)[0] for d in _docs("kuberay-rayjob.yaml") if d["kind"] == "RayJob"
                     for c in _containers(d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"])}
    assert cfg["docker"]["image"].rsplit(":", 1)[0] in rayjob_images  # one image for both


def test_dockerfile_installs_the_pins_and_the_nodeps_wheels():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M) and "python:3.11" in text  # pyproject: Python 3.11
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text  # CPU default, CUDA by build arg
    assert "pip install --no-deps -r requirements-nodeps.txt" in text
    assert 'tomllib.load(open("pyproject.toml", "rb"))["project"]' in text  # the exact pinned dependency list
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in src.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which is not in the repo"


def test_image_recipe_check_copies_what_the_dockerfile_copies():
    """cluster/check_image_recipe.sh replays the Dockerfile without Docker: it must copy the same
    files (a COPY added to the Dockerfile and not to the script would go unchecked)."""
    docker = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            docker.update(p.rstrip("/") for p in line.split()[1:-1])
    script = set()
    for line in (REPO / "cluster" / "check_image_recipe.sh").read_text().splitlines():
        words = line.strip().split()
        if words[:1] == ["cp"]:
            script.update(w for w in words[1:] if not w.startswith(("-", '"')))
    assert docker and docker == script, (sorted(docker - script), sorted(script - docker))

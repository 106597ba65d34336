# The cluster image: this repo installed with the same pins as `make venv` (pyproject.toml) and the
# official scorer's --no-deps wheels (requirements-nodeps.txt). One file, two variants:
#
#   docker build -t smart-r1:cpu .                                              # CPU nodes (rollouts, scorers)
#   docker build -t smart-r1:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # GPU learner
#
# The CUDA variant differs only in the torch wheel (which bundles its CUDA runtime; the GPU driver
# comes from the node through the NVIDIA container toolkit). cluster/kuberay-rayjob.yaml and
# cluster/cluster-launcher.yaml name these images (push them and edit `image:` there).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# cpu: PyTorch's CPU wheel index (no GBs of CUDA libraries); a cuXYZ index for the GPU image.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Extras of the project to install (the official scorer's TensorFlow stack, where it is an extra).
ARG EXTRAS=official

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 TF_CPP_MIN_LOG_LEVEL=2

# wget: KubeRay's readiness/liveness probes; tcmalloc: makes the official TF scorer ~2.6x faster (see Makefile).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wget libtcmalloc-minimal4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 ray

WORKDIR /app
# Dependencies first (cached while only the code changes): the pinned set from pyproject.toml.
COPY pyproject.toml setup.py requirements-nodeps.txt README.md ./
COPY smart_r1/metrics/requirements-official-nodeps.txt ./smart_r1/metrics/
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p.get("optional-dependencies", {}).get("official", [])))
PY
RUN pip install --extra-index-url "${TORCH_INDEX}" -r /tmp/requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt

# The project itself (not editable: the image is immutable).
COPY smart_r1 ./smart_r1
COPY learner ./learner
COPY rollout_workers ./rollout_workers
COPY configs ./configs
COPY cluster ./cluster
RUN pip install --no-deps ".[${EXTRAS}]" \
 && python -c "import smart_r1, learner.driver, rollout_workers, ray, torch; print('torch', torch.__version__, 'ray', ray.__version__)" \
 && mkdir -p /data/smart-r1 && chown -R ray:ray /app /data/smart-r1

USER ray
# Checkpoints / vocabulary / scene cache go to shared storage (runtime.storage or
# SMART_R1_STORAGE: an s3:// / gs:// URI or a mounted volume), never into the container.
ENV SMART_R1_STORAGE=/data/smart-r1
CMD ["smart-r1", "--help"]

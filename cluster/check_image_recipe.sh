#!/usr/bin/env bash
# Replays the install steps of the repository's Dockerfile outside Docker, in a fresh virtual
# environment, for machines without a Docker engine (or without a registry to pull the base
# image from). It checks what can go wrong in the recipe itself: the pins resolve together, the
# official scorer's --no-deps wheels install on top, the non-editable install of the project
# works from the files the Dockerfile copies (and only those), and the installed package imports
# and runs from outside the source tree. It does not check the base image or the apt packages.
#
#   cluster/check_image_recipe.sh [WORKDIR]        # default: a fresh temporary directory
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu cluster/check_image_recipe.sh   # as the CPU image
#
# TORCH_INDEX (default: none, i.e. PyPI only) is passed as --extra-index-url like the Dockerfile's
# build arg; leave it empty where that index is unreachable. PYTHON (default python3.11, the
# image's Python) builds the venv. About 3-4 GB of disk and a few minutes.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$(mktemp -d -t smart-r1-image-XXXXXX)}"
python="${PYTHON:-python3.11}"
extras="${EXTRAS:-official}"
mkdir -p "$work/app"
echo "== recipe check in $work (python: $($python --version), extras: $extras, torch index: ${TORCH_INDEX:-PyPI only})"

# COPY (dependency layer): the same files as the Dockerfile.
cd "$repo"
cp pyproject.toml setup.py requirements-nodeps.txt README.md "$work/app/"
mkdir -p "$work/app/smart_r1/metrics"
cp smart_r1/metrics/requirements-official-nodeps.txt "$work/app/smart_r1/metrics/"

"$python" -m venv "$work/venv"
pip="$work/venv/bin/pip"
py="$work/venv/bin/python"
"$pip" install -q --upgrade pip

cd "$work/app"
# RUN python - <<PY (the pinned set from pyproject.toml)
"$py" - > "$work/requirements.txt" <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p.get("optional-dependencies", {}).get("official", [])))
PY
echo "== dependency layer: $(wc -l < "$work/requirements.txt") requirements"
index_args=()
if [ -n "${TORCH_INDEX:-}" ]; then index_args=(--extra-index-url "$TORCH_INDEX"); fi
"$pip" install -q "${index_args[@]}" -r "$work/requirements.txt"
"$pip" install -q --no-deps -r requirements-nodeps.txt

# COPY (project layer), then the non-editable install.
cd "$repo"
cp -r smart_r1 learner rollout_workers configs cluster "$work/app/"
find "$work/app" -name __pycache__ -prune -exec rm -rf {} +
cd "$work/app"
"$pip" install -q --no-deps ".[$extras]"

# The image's own check, run from outside the source tree (what a Ray job's working dir sees).
cd /
"$py" -c "import smart_r1, learner.driver, rollout_workers, ray, torch; print('torch', torch.__version__, 'ray', ray.__version__)"
"$work/venv/bin/smart-r1" --help > /dev/null
"$py" -c "import importlib.resources as r; assert r.files('smart_r1.configs').joinpath('cpu_demo.yaml').is_file(); print('configs shipped')"
if [ "$extras" = "official" ]; then
  # The official WOSAC scorer of the image scores the real WOMD scene of the repository's tests.
  "$work/venv/bin/smart-r1" evaluate --checkpoint baseline:constant_velocity \
      --scenes "$repo/tests/fixtures/womd/scenario_637f20cafde22ff8.tfrecord" --backend official \
      --num-rollouts 32 --out "$work/eval" --no-report --quiet
  "$py" -c "import pyarrow.parquet as pq, sys; t = pq.read_table(sys.argv[1]).to_pylist(); \
print('official scorer in the image: realism meta', round(t[0]['metametric'], 4))" "$work/eval/scores.parquet"
fi
# pip's own consistency check, minus what the --no-deps install of the official scorer's wheels
# knowingly leaves (their pins conflict with the project's and are not needed to score;
# smart_r1/metrics/requirements-official-nodeps.txt says why).
unexpected="$("$pip" check 2>&1 | grep -v -E '^(waymo-open-dataset-tf-|tf-keras )' | grep -v '^No broken requirements' || true)"
if [ -n "$unexpected" ]; then
  echo "== pip check: unexpected dependency problems:"; echo "$unexpected"; exit 1
fi
echo "== OK: the Dockerfile's install recipe works in a fresh venv ($work)"

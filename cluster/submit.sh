#!/usr/bin/env bash
# Submit the training job to the head started by start_head.sh (same auth mode and token).
#   cluster/submit.sh configs/cpu_demo.yaml [extra smart-r1 train args]   # smart-r1 train --config ... --ray --address auto
#   cluster/submit.sh -- python -m my.module --flag                  # any other entrypoint
# The job id is readable: smart-r1-<config or command>-<UTC time> (or SUBMISSION_ID=...).
# Outputs go to $SMART_R1_STORAGE (default $SMART_R1_STATE/runs), never into Ray's temporary
# copy of the working dir. SMART_R1_LEARNER_RESOURCES='{"learner": 1}' runs the driver (the
# learner) on a node with that resource. Waits and streams the logs; SUBMIT_ARGS="--no-wait"
# returns after printing the job id (then: cluster/job.sh status|logs|stop ID).
source "$(dirname "$0")/env.sh"
load_head_info
cd "$REPO_ROOT"
if [ "${1:-}" = "--" ]; then
  shift; ENTRY=("$@"); label="$(basename "${ENTRY[0]}")"
  for a in "${ENTRY[@]}"; do case "$a" in *.yaml|*.yml) label="$(basename "$a")"; label="${label%.*}";; esac; done
else
  CONFIG="${1:-configs/cpu_demo.yaml}"; shift || true
  ENTRY=(smart-r1 train --config "$CONFIG" --ray --address auto "$@")
  label="$(basename "$CONFIG")"; label="${label%.*}"
fi
label="$(printf '%s' "$label" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-40)"
SUBMISSION_ID="${SUBMISSION_ID:-smart-r1-$label-$(date -u +%Y%m%d-%H%M%S)}"
RUNTIME_ENV_JSON="$("$BIN/python" - <<PY
import json, os
env = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
       "SMART_R1_STORAGE": os.environ["SMART_R1_STORAGE"]}
if os.environ.get("MLFLOW_TRACKING_URI"):  # every worker of the job (all nodes) sees the same tracking server
    env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
print(json.dumps({"env_vars": env, "excludes": [".venv", ".git", ".smart_r1_runs", "runs", "outputs", "*.tfrecord*", "__pycache__"]}))
PY
)"
extra=()
[ -z "${SMART_R1_LEARNER_RESOURCES:-}" ] || extra=(--entrypoint-resources "$SMART_R1_LEARNER_RESOURCES")
echo "submission id: $SUBMISSION_ID  (cluster/job.sh status|logs|stop $SUBMISSION_ID)"
exec "$BIN/ray" job submit --address "$RAY_ADDRESS" --working-dir . --submission-id "$SUBMISSION_ID" \
  --runtime-env-json "$RUNTIME_ENV_JSON" "${extra[@]}" ${SUBMIT_ARGS:-} -- "${ENTRY[@]}"

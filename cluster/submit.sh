#!/usr/bin/env bash
# Submit the training job to the head started by start_head.sh (same auth mode and token).
#   cluster/submit.sh configs/cpu_demo.yaml [extra smart-r1 train args]   # smart-r1 train --config ... --ray --address auto
#   cluster/submit.sh -- python -m my.module --flag                  # any other entrypoint
# Waits and streams the logs; SUBMIT_ARGS="--no-wait" returns after printing the job id.
source "$(dirname "$0")/env.sh"
load_head_info
cd "$REPO_ROOT"
if [ "${1:-}" = "--" ]; then
  shift; ENTRY=("$@")
else
  CONFIG="${1:-configs/cpu_demo.yaml}"; shift || true
  ENTRY=(smart-r1 train --config "$CONFIG" --ray --address auto "$@")
fi
RUNTIME_ENV_JSON="$("$BIN/python" - <<PY
import json, os
env = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
if os.environ.get("MLFLOW_TRACKING_URI"):
    env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
print(json.dumps({"env_vars": env, "excludes": [".venv", ".git", ".smart_r1_runs", "runs", "outputs", "*.tfrecord*", "__pycache__"]}))
PY
)"
exec "$BIN/ray" job submit --address "$RAY_ADDRESS" --working-dir . \
  --runtime-env-json "$RUNTIME_ENV_JSON" ${SUBMIT_ARGS:-} -- "${ENTRY[@]}"

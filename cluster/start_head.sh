#!/usr/bin/env bash
# Start a local Ray head node (with the job server) and the MLflow tracking server.
#   cluster/start_head.sh                 # token auth (Ray 2.60 default), token in $SMART_R1_STATE/ray_auth_token
#   RAY_AUTH=disabled cluster/start_head.sh
#   RAY_RESOURCES='{"learner": 1}' cluster/start_head.sh   # custom resources of the head node
# Writes $SMART_R1_STATE/head.env (ports, auth mode, temp dir, MLflow URI) for the other scripts.
# Exits non-zero (and stops what it started) when the job server does not answer.
source "$(dirname "$0")/env.sh"
check_tmp_dir "$RAY_TMP_DIR"
ray_auth_env
mkdir -p "$RAY_TMP_DIR"
res_args=()
[ -z "${RAY_RESOURCES:-}" ] || res_args=(--resources "$RAY_RESOURCES")
"$BIN/ray" start --head \
  --port "$RAY_PORT" \
  --dashboard-host 127.0.0.1 --dashboard-port "$RAY_DASHBOARD_PORT" \
  --num-cpus "$RAY_NUM_CPUS" --object-store-memory "$RAY_OBJECT_STORE_BYTES" "${res_args[@]}" \
  --temp-dir "$RAY_TMP_DIR" ${RAY_START_ARGS:-} --disable-usage-stats
cat > "$SMART_R1_STATE/head.env" <<ENV
RAY_AUTH=$RAY_AUTH
RAY_PORT=$RAY_PORT
RAY_DASHBOARD_PORT=$RAY_DASHBOARD_PORT
RAY_TMP_DIR=$RAY_TMP_DIR
SMART_R1_STORAGE=$SMART_R1_STORAGE
ENV

# The job server lives in the dashboard; `ray start` returns before it is up (or when it failed).
export RAY_ADDRESS="http://127.0.0.1:$RAY_DASHBOARD_PORT"
ok=0
for _ in $(seq 1 "${RAY_JOB_SERVER_WAIT_S:-90}"); do
  if "$BIN/ray" job list --address "$RAY_ADDRESS" >/dev/null 2>&1; then ok=1; break; fi
  sleep 1
done
if [ "$ok" != 1 ]; then
  echo "error: the Ray job server at $RAY_ADDRESS did not answer within ${RAY_JOB_SERVER_WAIT_S:-90} s;" >&2
  echo "       see $RAY_TMP_DIR/session_latest/logs/dashboard.log. Stopping the head." >&2
  "$BIN/python" "$REPO_ROOT/cluster/ray_procs.py" kill "$RAY_TMP_DIR" >&2 || true
  rm -f "$SMART_R1_STATE/head.env"
  exit 1
fi

if [ "${SMART_R1_NO_MLFLOW:-0}" != "1" ]; then
  MLFLOW_URI="$("$BIN/python" -m smart_r1.mlflow_server start --root "$SMART_R1_STATE/mlflow" --host "$MLFLOW_HOST" --port "$MLFLOW_PORT")"
else
  MLFLOW_URI="${MLFLOW_TRACKING_URI:-}"
fi
echo "MLFLOW_TRACKING_URI=$MLFLOW_URI" >> "$SMART_R1_STATE/head.env"
echo "Ray head:   127.0.0.1:$RAY_PORT (auth: $RAY_AUTH${RAY_AUTH_TOKEN_PATH:+, token file $RAY_AUTH_TOKEN_PATH})"
echo "Dashboard:  http://127.0.0.1:$RAY_DASHBOARD_PORT  (asks for the token: paste the contents of ${RAY_AUTH_TOKEN_PATH:-the token file})"
echo "Temp dir:   $RAY_TMP_DIR"
echo "Outputs:    $SMART_R1_STORAGE"
echo "MLflow:     $MLFLOW_URI"

#!/usr/bin/env bash
# Start a local Ray head node and the MLflow tracking server.
#   cluster/start_head.sh                 # token auth (Ray 2.60 default), token in $SMART_R1_STATE/ray_auth_token
#   RAY_AUTH=disabled cluster/start_head.sh
# Writes $SMART_R1_STATE/head.env (ports, auth mode, MLflow URI) for submit.sh / logs.sh / stop.sh.
source "$(dirname "$0")/env.sh"
ray_auth_env
mkdir -p "$SMART_R1_STATE/ray_tmp"
"$BIN/ray" start --head \
  --port "$RAY_PORT" \
  --dashboard-host 127.0.0.1 --dashboard-port "$RAY_DASHBOARD_PORT" \
  --num-cpus "$RAY_NUM_CPUS" --object-store-memory "$RAY_OBJECT_STORE_BYTES" \
  --temp-dir "$SMART_R1_STATE/ray_tmp" ${RAY_START_ARGS:-} --disable-usage-stats
if [ "${SMART_R1_NO_MLFLOW:-0}" != "1" ]; then
  MLFLOW_URI="$("$BIN/python" -m smart_r1.mlflow_server start --root "$SMART_R1_STATE/mlflow" --host "$MLFLOW_HOST" --port "$MLFLOW_PORT")"
else
  MLFLOW_URI="${MLFLOW_TRACKING_URI:-}"
fi
cat > "$SMART_R1_STATE/head.env" <<ENV
RAY_AUTH=$RAY_AUTH
RAY_PORT=$RAY_PORT
RAY_DASHBOARD_PORT=$RAY_DASHBOARD_PORT
MLFLOW_TRACKING_URI=$MLFLOW_URI
ENV
echo "Ray head:   127.0.0.1:$RAY_PORT (auth: $RAY_AUTH${RAY_AUTH_TOKEN_PATH:+, token file $RAY_AUTH_TOKEN_PATH})"
echo "Dashboard:  http://127.0.0.1:$RAY_DASHBOARD_PORT"
echo "MLflow:     $MLFLOW_URI"

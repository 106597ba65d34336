#!/usr/bin/env bash
# Stop the MLflow server and the Ray head started by start_head.sh (only those: the Ray head is
# addressed through its own temp dir, the MLflow server through its recorded pid).
source "$(dirname "$0")/env.sh"
load_head_info
"$BIN/python" -m smart_r1.mlflow_server stop --root "$SMART_R1_STATE/mlflow" || true
# `ray stop` stops every Ray process of this user on the machine; stop only ours by pid instead.
RAY_TMP="$SMART_R1_STATE/ray_tmp"
if [ -d "$RAY_TMP" ]; then
  pids="$(pgrep -u "$(id -u)" -f -- "$RAY_TMP" || true)"
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  sleep 2
  pids="$(pgrep -u "$(id -u)" -f -- "$RAY_TMP" || true)"
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
fi
rm -f "$SMART_R1_STATE/head.env"
echo "stopped"

#!/usr/bin/env bash
# Stop everything start_head.sh / start_worker.sh started for this state dir: the MLflow server
# (by its recorded pid) and every process of the Ray head and of the local worker nodes (by
# their temp dirs and the process trees below them: cluster/ray_procs.py). Never `ray stop`,
# which would stop every Ray cluster of this user on the machine.
source "$(dirname "$0")/env.sh"
load_head_info
"$BIN/python" -m smart_r1.mlflow_server stop --root "$SMART_R1_STATE/mlflow" || true
dirs=("$RAY_TMP_DIR")
for f in "$SMART_R1_STATE"/nodes/*.env; do
  [ -f "$f" ] || continue
  dirs+=("$(sed -n 's/^NODE_TMP_DIR=//p' "$f")")
done
rc=0
"$BIN/python" "$REPO_ROOT/cluster/ray_procs.py" kill "${dirs[@]}" || rc=$?
# Keep the records of a cluster that did not stop cleanly, so a retry still finds its temp dirs.
[ "$rc" = 0 ] && rm -f "$SMART_R1_STATE/head.env" "$SMART_R1_STATE"/nodes/*.env
exit $rc

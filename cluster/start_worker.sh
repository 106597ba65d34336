#!/usr/bin/env bash
# Add a worker node to the head started by start_head.sh (`ray start --address`), on this machine
# or another one that sees the same state dir (the token). Each node gets its own temp dir.
#   cluster/start_worker.sh NAME                              # e.g. rollout1
#   RAY_NUM_CPUS=8 RAY_RESOURCES='{"rollout": 8, "scorer": 8}' cluster/start_worker.sh rollout1
#   RAY_HEAD_ADDRESS=10.0.0.5:6379 cluster/start_worker.sh gpu0   # a head on another machine
# Several nodes on one machine also need distinct ports: pass them in RAY_START_ARGS
# (--node-manager-port, --object-manager-port, --min/max-worker-port, ... as `ray start --help` lists).
source "$(dirname "$0")/env.sh"
NAME="${1:?usage: cluster/start_worker.sh NAME}"
load_head_info
NODE_TMP_DIR="${NODE_TMP_DIR:-$RAY_TMP_DIR-$NAME}"
check_tmp_dir "$NODE_TMP_DIR"
mkdir -p "$NODE_TMP_DIR" "$SMART_R1_STATE/nodes"
res_args=()
[ -z "${RAY_RESOURCES:-}" ] || res_args=(--resources "$RAY_RESOURCES")
echo "NODE_TMP_DIR=$NODE_TMP_DIR" > "$SMART_R1_STATE/nodes/$NAME.env"  # stop.sh stops it with the head
"$BIN/ray" start --address "${RAY_HEAD_ADDRESS:-127.0.0.1:$RAY_PORT}" \
  --num-cpus "$RAY_NUM_CPUS" --object-store-memory "$RAY_OBJECT_STORE_BYTES" "${res_args[@]}" \
  --temp-dir "$NODE_TMP_DIR" ${RAY_START_ARGS:-} --disable-usage-stats
echo "worker node $NAME: temp dir $NODE_TMP_DIR, resources ${RAY_RESOURCES:-{\}} + $RAY_NUM_CPUS CPUs"

#!/usr/bin/env bash
# Follow a job's logs (or list the jobs without an id).
#   cluster/logs.sh [JOB_ID]
source "$(dirname "$0")/env.sh"
load_head_info
if [ $# -eq 0 ]; then exec "$BIN/ray" job list --address "$RAY_ADDRESS"; fi
exec "$BIN/ray" job logs --address "$RAY_ADDRESS" --follow "$1"

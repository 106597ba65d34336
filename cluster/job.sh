#!/usr/bin/env bash
# `ray job` with this cluster's address and auth token (Ray's own hints, `ray job status ID`,
# fail with AuthenticationError without them).
#   cluster/job.sh list
#   cluster/job.sh status ID
#   cluster/job.sh logs ID [--follow]
#   cluster/job.sh stop ID
source "$(dirname "$0")/env.sh"
load_head_info
cmd="${1:-list}"; shift || true
case "$cmd" in
  list) exec "$BIN/ray" job list --address "$RAY_ADDRESS" "$@" ;;
  status|stop|logs|delete)
    [ $# -ge 1 ] || { echo "usage: cluster/job.sh $cmd ID" >&2; exit 2; }
    exec "$BIN/ray" job "$cmd" --address "$RAY_ADDRESS" "$@" ;;
  *) echo "usage: cluster/job.sh list|status|logs|stop ID" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Follow a job's logs (or list the jobs without an id): cluster/job.sh logs ID --follow.
#   cluster/logs.sh [JOB_ID]
if [ $# -eq 0 ]; then exec "$(dirname "$0")/job.sh" list; fi
exec "$(dirname "$0")/job.sh" logs "$1" --follow

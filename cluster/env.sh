# Sourced by the cluster scripts. Everything is overridable from the environment.
#   SMART_R1_STATE     where the cluster's state lives (token, head.env, MLflow db/artifacts, job outputs)
#                      default: <repo>/.smart_r1_runs/cluster
#   RAY_TMP_DIR        the head's Ray temp dir (sockets, logs). Default /tmp/sr1-<8 hex of the state dir>:
#                      Ray's socket paths (<dir>/session_<date>_<pid>/sockets/...) must stay under the
#                      107-byte AF_UNIX limit, so it is checked to be at most 36 characters
#   RAY_AUTH           token (default: Ray 2.60's default) | disabled
#   RAY_PORT           GCS port of the head (default 6379)
#   RAY_DASHBOARD_PORT dashboard / job-submission port (default 8265)
#   MLFLOW_PORT        tracking server port (default 5000); MLFLOW_HOST (default 127.0.0.1)
#   RAY_NUM_CPUS, RAY_OBJECT_STORE_BYTES  node resources (default: 2 CPUs, 500 MB store)
#   SMART_R1_STORAGE   where jobs write their outputs (default $SMART_R1_STATE/runs; a shared path or URI)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SMART_R1_STATE="${SMART_R1_STATE:-$REPO_ROOT/.smart_r1_runs/cluster}"
export RAY_AUTH="${RAY_AUTH:-token}"
export RAY_PORT="${RAY_PORT:-6379}"
export RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
export MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
export RAY_NUM_CPUS="${RAY_NUM_CPUS:-2}"
export RAY_OBJECT_STORE_BYTES="${RAY_OBJECT_STORE_BYTES:-500000000}"
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
if [ -x "$REPO_ROOT/.venv/bin/ray" ]; then BIN="$REPO_ROOT/.venv/bin"; else BIN="$(dirname "$(command -v ray)")"; fi
export BIN
export PATH="$BIN:$PATH"  # jobs started by the head find smart-r1 / python of this environment
mkdir -p "$SMART_R1_STATE"
SMART_R1_STATE="$(cd "$SMART_R1_STATE" && pwd)"
export SMART_R1_STORAGE="${SMART_R1_STORAGE:-$SMART_R1_STATE/runs}"
export RAY_TMP_DIR="${RAY_TMP_DIR:-/tmp/sr1-$(printf '%s' "$SMART_R1_STATE" | sha1sum | cut -c1-8)}"
RAY_TMP_MAX=36

# Ray puts Unix sockets under its temp dir; a socket path over 107 bytes makes the dashboard (and
# so the job server) fail to start, silently. Refuse such a dir up front.
check_tmp_dir() {  # $1: a Ray temp dir
  if [ "${#1}" -gt "$RAY_TMP_MAX" ]; then
    echo "error: Ray temp dir '$1' is ${#1} characters; Ray's socket paths (<dir>/session_<date>_<pid>/sockets/...)" >&2
    echo "       must stay under the 107-byte Unix socket limit, so keep it at most $RAY_TMP_MAX characters:" >&2
    echo "       set RAY_TMP_DIR to a short path, e.g. RAY_TMP_DIR=/tmp/sr1-\$USER" >&2
    exit 2
  fi
}

# Token auth (Ray >= 2.52 turns it on by default): the head and every client must see the same
# token. We keep our own token file (never touching ~/.ray/auth_token, which other clusters on
# this machine may use) and point Ray at it with RAY_AUTH_TOKEN_PATH.
ray_auth_env() {
  case "$RAY_AUTH" in
    token)
      local tok="${RAY_AUTH_TOKEN_PATH:-$SMART_R1_STATE/ray_auth_token}"
      if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "$tok" ]; then
        ( umask 077; "$BIN/python" -c "import secrets; print(secrets.token_hex(32), end='')" > "$tok" )
      fi
      export RAY_AUTH_MODE=token
      [ -n "${RAY_AUTH_TOKEN:-}" ] || export RAY_AUTH_TOKEN_PATH="$tok"
      ;;
    disabled)
      export RAY_AUTH_MODE=disabled
      unset RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH || true
      ;;
    *) echo "RAY_AUTH must be 'token' or 'disabled', got '$RAY_AUTH'" >&2; exit 2 ;;
  esac
}

# The head records its mode and addresses so submit/job/stop/start_worker use the same ones.
load_head_info() {
  if [ -f "$SMART_R1_STATE/head.env" ]; then
    # shellcheck disable=SC1091
    set -a; . "$SMART_R1_STATE/head.env"; set +a
  fi
  ray_auth_env
  export RAY_ADDRESS="http://127.0.0.1:$RAY_DASHBOARD_PORT"
}

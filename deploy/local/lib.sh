# shellcheck shell=bash
# Helpers shared by the deploy/local/*.sh scripts. Sourced, never executed.
#
# Callers set SCRIPT_DIR before sourcing; everything else is derived here so
# that the scripts work from any working directory and any checkout path.

# The repository root is two levels above deploy/local/, whatever the cwd.
REPO_ROOT=$(cd -- "${SCRIPT_DIR}/../.." && pwd)
# All local state (Kafka libs, data, logs, pid files, locks) lives in one
# git-ignored folder, so `rm -rf .local` is a complete reset.
STATE_DIR=${PACEKEEPER_STATE_DIR:-${REPO_ROOT}/.local}
export REPO_ROOT STATE_DIR

log() {
  printf '[infra] %s\n' "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

require_root() {
  # apt-get, runuser and the Debian cluster tools need root; failing early
  # beats a half-done install.
  [[ ${EUID} -eq 0 ]] || die "$1 must run as root (it uses apt-get/runuser)"
}

# port_from_env VAR... DEFAULT: the first set variable wins. Validated because
# generic names like KAFKA_PORT are also injected by Kubernetes service links
# (as tcp://10.0.0.1:9092), which must fail loudly instead of being used.
port_from_env() {
  local default=${*: -1}
  local name value=${default} source=default
  for name in "${@:1:$#-1}"; do
    if [[ -n ${!name:-} ]]; then
      value=${!name}
      source=${name}
      break
    fi
  done
  if [[ ! ${value} =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    die "invalid port '${value}' (from ${source}); expected 1-65535"
  fi
  printf '%s\n' "${value}"
}

# port_is_open HOST PORT: true when something accepts TCP connections there.
# Uses bash's /dev/tcp so that a fresh machine needs no netcat.
port_is_open() {
  # shellcheck disable=SC2016 # $1/$2 expand in the inner bash, on purpose.
  timeout 2 bash -c ': <>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_port_closed HOST PORT SECONDS
wait_port_closed() {
  local deadline=$((SECONDS + $3))
  while port_is_open "$1" "$2"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# describe_listener PORT: who listens there, for error messages (best effort).
describe_listener() {
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$1" 2>/dev/null || true
  fi
}

# apt_install PKG...: non-interactive and idempotent. Retries once after
# `apt-get update` because fresh images often ship without package lists.
apt_install() {
  local -a apt=(
    apt-get -y -q --no-install-recommends
    -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold
    install
  )
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! without_locks "${apt[@]}" "$@"; then
    log "install failed; refreshing package lists and retrying"
    apt-get -q -o DPkg::Lock::Timeout=300 update
    without_locks "${apt[@]}" "$@"
  fi
}

# with_lock FILE: serialise concurrent runs (parallel test jobs calling `up`)
# on FILE for the rest of the calling script. The fd closes when it exits.
# Daemons started while a lock is held must close LOCK_FDS first (see
# close_lock_fds), or they inherit the lock and keep it for their lifetime.
LOCK_FDS=()
with_lock() {
  local lock_fd
  mkdir -p -- "$(dirname -- "$1")"
  exec {lock_fd}>>"$1"
  LOCK_FDS+=("${lock_fd}")
  if ! flock -w 300 "${lock_fd}"; then
    die "timed out waiting for lock $1 (held by pids:$(lock_holders "$1"))"
  fi
}

# lock_holders FILE: pids with FILE open, for the timeout message.
lock_holders() {
  local fd
  for fd in /proc/[0-9]*/fd/*; do
    if [[ $(readlink -- "${fd}" 2>/dev/null) == "$1" ]]; then
      fd=${fd#/proc/}
      printf ' %s' "${fd%%/*}"
    fi
  done | tr ' ' '\n' | sort -u | tr '\n' ' '
}

close_lock_fds() {
  local lock_fd
  for lock_fd in "${LOCK_FDS[@]}"; do
    exec {lock_fd}>&-
  done
}

# without_locks CMD...: run CMD with the lock fds closed. For every command
# that may leave a daemon behind (pg_ctlcluster start, apt postinst scripts):
# bash cannot mark fds close-on-exec, and a server that inherits the lock fd
# holds the lock until it stops, so the next `up` or `down` would hang.
without_locks() {
  (
    close_lock_fds
    exec "$@"
  )
}

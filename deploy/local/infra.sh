#!/usr/bin/env bash
# The local infrastructure the services and the test suite need, in one step:
# PostgreSQL (Debian packages) and a single-node Apache Kafka broker.
#
#   deploy/local/infra.sh up       postgres.sh up, then kafka.sh up (fetches jars on first run)
#   deploy/local/infra.sh down     kafka.sh down, then postgres.sh down
#   deploy/local/infra.sh status   both statuses; exit 3 unless both run
#
# Both steps are idempotent, so a second `up` is a quick no-op. Environment
# overrides are passed through (PGPORT, KAFKA_PORT, PACEKEEPER_STATE_DIR...).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

cmd_up() {
  local started=${SECONDS}
  # Database first: it is what services need before they consume anything.
  "${SCRIPT_DIR}/postgres.sh" up
  "${SCRIPT_DIR}/kafka.sh" up
  log "infra up in $((SECONDS - started))s (state in ${STATE_DIR})"
}

cmd_down() {
  local rc=0
  # Reverse order. Keep going if Kafka fails to stop so that `down` still
  # stops PostgreSQL, then report the failure.
  "${SCRIPT_DIR}/kafka.sh" down || rc=$?
  "${SCRIPT_DIR}/postgres.sh" down || rc=$?
  ((rc == 0)) || die "infra down incomplete (exit ${rc})"
  log "infra down"
}

cmd_status() {
  local rc=0
  "${SCRIPT_DIR}/postgres.sh" status || rc=3
  "${SCRIPT_DIR}/kafka.sh" status || rc=3
  return "${rc}"
}

main() {
  case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    printf 'usage: %s {up|down|status}\n' "$0" >&2
    exit 2
    ;;
  esac
}

main "$@"

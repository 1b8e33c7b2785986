#!/usr/bin/env bash
# Prometheus and Alertmanager binaries for tests, from the Debian packages.
#
#   deploy/local/observability.sh install   apt-get install them when missing
#   deploy/local/observability.sh status    print the binaries and versions
#
# Tests start their own instances on loopback with their own configuration,
# so the packaged system services must NOT run: they would hold 9090/9093 on
# all interfaces, and Alertmanager's cluster gossip would take 9094, the
# local Kafka controller's port. Both commands print the binary paths on
# stdout as KEY=VALUE lines:
#   PROMETHEUS_BIN=/usr/bin/prometheus
#   ALERTMANAGER_BIN=/usr/bin/prometheus-alertmanager
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

PROMETHEUS_BIN=/usr/bin/prometheus
ALERTMANAGER_BIN=/usr/bin/prometheus-alertmanager
SERVICES=(prometheus prometheus-alertmanager)
POLICY_RC=/usr/sbin/policy-rc.d
# Set only when this script created the policy file, so it never removes
# one that the image (e.g. Debian's Docker images) already had.
OWN_POLICY_RC=""

remove_own_policy_rc() {
  if [[ -n ${OWN_POLICY_RC} ]]; then
    rm -f -- "${POLICY_RC}"
    OWN_POLICY_RC=""
  fi
}

# Without systemd the packages' postinst runs `invoke-rc.d <svc> start`, which
# starts the daemons right away. policy-rc.d exit code 101 means "action
# forbidden", the documented way to keep maintainer scripts from starting
# services (deb-systemd-invoke honours it too).
block_service_starts() {
  [[ -e ${POLICY_RC} ]] && return 0
  printf '#!/bin/sh\n# temporary, from pacekeeper deploy/local/observability.sh\nexit 101\n' >"${POLICY_RC}"
  chmod 0755 "${POLICY_RC}"
  OWN_POLICY_RC=1
  trap remove_own_policy_rc EXIT
}

# In case a service was started anyway (an older install, or a machine whose
# policy-rc.d allows starts): stop it and keep it from starting at boot.
stop_and_disable_services() {
  local svc
  for svc in "${SERVICES[@]}"; do
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
      if systemctl is-active --quiet "${svc}" || systemctl is-enabled --quiet "${svc}" 2>/dev/null; then
        log "disabling and stopping the ${svc} system service"
        systemctl disable --now --quiet "${svc}" || true
      fi
    elif [[ -x /etc/init.d/${svc} ]]; then
      if /etc/init.d/"${svc}" status >/dev/null 2>&1; then
        log "stopping the ${svc} system service"
        /etc/init.d/"${svc}" stop >&2 || true
      fi
      update-rc.d "${svc}" disable >/dev/null 2>&1 || true
    fi
  done
}

# Fails if a packaged daemon survived. The packages run them as the system
# user `prometheus`; instances that tests start run as the test's user, so
# they are not mistaken for leftovers.
check_no_system_daemons() {
  local uid proc owner port pids=""
  # /proc instead of pgrep: minimal images may lack procps.
  if uid=$(id -u prometheus 2>/dev/null); then
    for proc in /proc/[0-9]*; do
      owner=$(awk '/^Uid:/ { print $2 }' 2>/dev/null <"${proc}/status") || continue
      [[ ${owner} == "${uid}" ]] && pids+=" ${proc#/proc/}"
    done
  fi
  [[ -z ${pids} ]] || die "system Prometheus/Alertmanager processes still running:${pids}"
  for port in 9090 9093 9094; do
    if port_is_open 127.0.0.1 "${port}"; then
      # E.g. our Kafka controller on 9094, or a test's own instance.
      log "note: port ${port} is in use: $(describe_listener "${port}")"
    fi
  done
}

print_binaries() {
  local bin
  for bin in "${PROMETHEUS_BIN}" "${ALERTMANAGER_BIN}"; do
    [[ -x ${bin} ]] || die "${bin} not found; run '$0 install'"
    # sed, not head: head exiting early could SIGPIPE the binary.
    log "$("${bin}" --version 2>&1 | sed -n 1p)"
  done
  printf 'PROMETHEUS_BIN=%s\nALERTMANAGER_BIN=%s\n' "${PROMETHEUS_BIN}" "${ALERTMANAGER_BIN}"
}

cmd_install() {
  local -a missing=()
  require_root "observability.sh install"
  [[ -x ${PROMETHEUS_BIN} ]] || missing+=(prometheus)
  [[ -x ${ALERTMANAGER_BIN} ]] || missing+=(prometheus-alertmanager)
  if ((${#missing[@]} > 0)); then
    block_service_starts
    # --no-install-recommends: prometheus recommends prometheus-node-exporter,
    # another daemon (on 9100) that tests do not need.
    apt_install "${missing[@]}"
    remove_own_policy_rc
  else
    log "prometheus and prometheus-alertmanager already installed"
  fi
  stop_and_disable_services
  check_no_system_daemons
  log "start test Alertmanagers with --cluster.listen-address= (empty): its gossip default, 0.0.0.0:9094, is the Kafka controller's port"
  print_binaries
}

main() {
  case ${1:-} in
  install) cmd_install ;;
  status) print_binaries ;;
  *)
    printf 'usage: %s {install|status}\n' "$0" >&2
    exit 2
    ;;
  esac
}

main "$@"

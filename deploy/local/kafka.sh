#!/usr/bin/env bash
# Local Apache Kafka broker for development and tests, without Docker and
# without the release tarball: the broker's own jars come from Maven Central
# (deploy/local/kafka/pom.xml) and run on Java 17 as a single KRaft node.
#
#   deploy/local/kafka.sh fetch    resolve the jars into <state>/kafka/libs
#   deploy/local/kafka.sh up       fetch, format storage once, start, wait until ready
#   deploy/local/kafka.sh down     stop (SIGTERM, SIGKILL after KAFKA_STOP_TIMEOUT)
#   deploy/local/kafka.sh status   print running/stopped and the version (exit 3 if stopped)
#
# Environment:
#   PACEKEEPER_STATE_DIR       state root (default <repo>/.local)
#   PACEKEEPER_KAFKA_PORT or KAFKA_PORT                        broker port (9092)
#   PACEKEEPER_KAFKA_CONTROLLER_PORT or KAFKA_CONTROLLER_PORT  controller port (9094)
#   KAFKA_HEAP_OPTS            JVM heap (default "-Xmx512m -Xms256m")
#   KAFKA_START_TIMEOUT        seconds `up` waits for readiness (180: a broker recovering many logs after an unclean stop is slow)
#   KAFKA_STOP_TIMEOUT         seconds `down` waits before SIGKILL (30)
#
# Each broker port gets its own folder (<state>/kafka/broker-<port>/), so a
# test can run a second broker with other ports next to the default one.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

KAFKA_PORT=$(port_from_env PACEKEEPER_KAFKA_PORT KAFKA_PORT 9092)
CONTROLLER_PORT=$(port_from_env PACEKEEPER_KAFKA_CONTROLLER_PORT KAFKA_CONTROLLER_PORT 9094)
[[ ${KAFKA_PORT} != "${CONTROLLER_PORT}" ]] || die "broker and controller ports must differ (${KAFKA_PORT})"
START_TIMEOUT=${KAFKA_START_TIMEOUT:-180}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
# Upstream defaults to 1 GiB; half of that is plenty for local topics and
# leaves room for Postgres and the services on a 2-core CI machine.
read -r -a HEAP_OPTS <<<"${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"

CONF_DIR=${SCRIPT_DIR}/kafka
POM=${CONF_DIR}/pom.xml
KAFKA_HOME=${STATE_DIR}/kafka
LIBS_DIR=${KAFKA_HOME}/libs
STAMP_FILE=${LIBS_DIR}/.pom.sha256
INSTANCE_DIR=${KAFKA_HOME}/broker-${KAFKA_PORT}
DATA_DIR=${INSTANCE_DIR}/data
LOG_DIR=${INSTANCE_DIR}/logs
SERVER_LOG=${LOG_DIR}/server.log
CONFIG_FILE=${INSTANCE_DIR}/server.properties
PID_FILE=${INSTANCE_DIR}/kafka.pid
JAVA=${JAVA_HOME:+${JAVA_HOME}/bin/}java

pom_kafka_version() {
  sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "${POM}"
}

# The version actually installed in libs/, falling back to the pinned one.
kafka_version() {
  local jar
  for jar in "${LIBS_DIR}"/kafka_2.13-*.jar; do
    if [[ -f ${jar} ]]; then
      jar=${jar##*/kafka_2.13-}
      printf '%s\n' "${jar%.jar}"
      return
    fi
  done
  printf '%s (not fetched)\n' "$(pom_kafka_version)"
}

ensure_java_and_maven() {
  if ! command -v "${JAVA}" >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    require_root "installing Java and Maven"
    apt_install openjdk-17-jre-headless maven
  fi
  # Kafka 4.x brokers refuse to run on anything older than Java 17.
  local spec
  spec=$("${JAVA}" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = //p')
  [[ ${spec%%.*} -ge 17 ]] || die "Kafka 4 needs Java 17+, found ${spec} (${JAVA})"
}

# Runs one of Kafka's command-line classes from libs/. C1-only JIT: these
# JVMs live for a second or two, where it starts measurably faster.
KAFKA_TOOL=(
  "${JAVA}" -Xmx256m -XX:TieredStopAtLevel=1
  -Dlog4j2.configurationFile="${CONF_DIR}/log4j2-tools.properties"
  -cp "${LIBS_DIR}/*"
)

pid_alive() {
  local state
  [[ -r /proc/$1/stat ]] || return 1
  # A zombie still answers `kill -0`, but it has released its ports and files.
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ ${state} != Z ]]
}

# True when PID is a broker started from this instance's configuration, so a
# recycled pid or another broker is never mistaken for ours.
is_our_broker() {
  local cmdline
  pid_alive "$1" || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ ${cmdline} == *" kafka.Kafka ${CONFIG_FILE}"* ]]
}

# Prints the pid of our running broker. Falls back to scanning /proc so that a
# lost or stale pid file never leaves an unmanageable broker behind.
broker_pid() {
  local pid proc
  if [[ -f ${PID_FILE} ]]; then
    pid=$(<"${PID_FILE}")
    if [[ ${pid} =~ ^[0-9]+$ ]] && is_our_broker "${pid}"; then
      printf '%s\n' "${pid}"
      return 0
    fi
  fi
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    if is_our_broker "${pid}"; then
      printf '%s\n' "${pid}"
      return 0
    fi
  done
  return 1
}

# True when any JVM (of any broker port) runs with jars from LIBS_DIR.
libs_in_use() {
  local proc cmdline
  for proc in /proc/[0-9]*; do
    cmdline=$(tr '\0' ' ' 2>/dev/null <"${proc}/cmdline") || continue
    [[ ${cmdline} == *"${LIBS_DIR}/"* ]] && return 0
  done
  return 1
}

cmd_fetch() {
  local want tmp
  want=$(sha256sum "${POM}" | cut -d' ' -f1)
  if [[ -f ${STAMP_FILE} && $(<"${STAMP_FILE}") == "${want}" ]]; then
    return 0
  fi
  with_lock "${KAFKA_HOME}/.fetch.lock"
  # Re-check: a concurrent fetch may have finished while we waited.
  if [[ -f ${STAMP_FILE} && $(<"${STAMP_FILE}") == "${want}" ]]; then
    return 0
  fi
  # Swapping jars under a running JVM breaks its lazy class loading.
  if libs_in_use; then
    die "kafka/pom.xml changed but a broker still runs from ${LIBS_DIR}; run '$0 down' first"
  fi
  ensure_java_and_maven
  log "fetching Kafka $(pom_kafka_version) jars from Maven Central into ${LIBS_DIR}"
  mkdir -p -- "${KAFKA_HOME}"
  # Resolve into a temporary folder and swap it in at the end: an interrupted
  # download never leaves a half-filled libs/ that looks complete, and a
  # changed pom never leaves old jar versions next to new ones.
  tmp=$(mktemp -d "${KAFKA_HOME}/libs.tmp.XXXXXX")
  # Maven's output goes to a file: even with -q -B, Maven 3.8 prints stray
  # ANSI reset codes, and our stdout is reserved for results.
  if ! mvn -q -B -ntp -Dstyle.color=never -f "${POM}" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="${tmp}" >"${KAFKA_HOME}/mvn.log" 2>&1; then
    rm -rf -- "${tmp}"
    tail -n 40 -- "${KAFKA_HOME}/mvn.log" >&2
    die "mvn could not resolve the Kafka jars (is Maven Central reachable?); see ${KAFKA_HOME}/mvn.log"
  fi
  [[ -f ${tmp}/kafka_2.13-$(pom_kafka_version).jar ]] ||
    die "mvn finished but kafka_2.13-$(pom_kafka_version).jar is missing in ${tmp}"
  printf '%s\n' "${want}" >"${tmp}/.pom.sha256"
  # mktemp -d makes it 0700; non-root test runs need to read the jars.
  chmod 0755 "${tmp}"
  rm -rf -- "${LIBS_DIR}"
  mv -- "${tmp}" "${LIBS_DIR}"
  log "fetched $(find "${LIBS_DIR}" -name '*.jar' | wc -l) jars ($(du -sh "${LIBS_DIR}" | cut -f1))"
}

# sed replacement text: escape the characters sed treats specially.
sed_escape() {
  printf '%s' "$1" | sed 's/[\\&|]/\\&/g'
}

render_config() {
  mkdir -p -- "${DATA_DIR}" "${LOG_DIR}"
  # Rendered on every `up`, so edits to the template take effect on restart.
  sed -e "s|@BROKER_PORT@|${KAFKA_PORT}|g" \
    -e "s|@CONTROLLER_PORT@|${CONTROLLER_PORT}|g" \
    -e "s|@DATA_DIR@|$(sed_escape "${DATA_DIR}")|g" \
    "${CONF_DIR}/server.properties.template" >"${CONFIG_FILE}"
}

format_storage() {
  local cluster_id
  # meta.properties is written last by the format step, so it marks success.
  [[ -f ${DATA_DIR}/meta.properties ]] && return 0
  cluster_id=$("${KAFKA_TOOL[@]}" kafka.tools.StorageTool random-uuid)
  log "formatting KRaft storage in ${DATA_DIR} (cluster id ${cluster_id})"
  "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format --config "${CONFIG_FILE}" \
    --cluster-id "${cluster_id}" --ignore-formatted >&2
}

start_broker() {
  local pid
  local -a jvm_opts=(
    "${HEAP_OPTS[@]}"
    # The GC settings of upstream's kafka-run-class.sh.
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
    # A broker that ran out of memory is broken; exiting lets `up` notice.
    -XX:+ExitOnOutOfMemoryError
    -XX:ErrorFile="${LOG_DIR}/hs_err_pid%p.log"
    -Djava.awt.headless=true
    -Dkafka.logs.dir="${LOG_DIR}"
    -Dlog4j2.configurationFile="${CONF_DIR}/log4j2.properties"
  )
  # setsid: the broker must outlive this script's session and process group
  # (CI steps and test harnesses kill those). nohup: ignore SIGHUP likewise.
  # `exec` keeps one pid from the subshell down to the JVM, so $! is the JVM.
  # stdout/stderr only receive JVM-level messages; log4j2 writes server.log.
  (
    close_lock_fds # or the broker would hold `up`'s lock for its lifetime
    cd -- "${INSTANCE_DIR}"
    exec nohup setsid "${JAVA}" "${jvm_opts[@]}" -cp "${LIBS_DIR}/*" \
      kafka.Kafka "${CONFIG_FILE}" >>"${LOG_DIR}/kafka.out" 2>&1 </dev/null
  ) &
  pid=$!
  printf '%s\n' "${pid}" >"${PID_FILE}"
  printf '%s\n' "${pid}"
}

dump_logs() {
  log "last lines of ${SERVER_LOG} and ${LOG_DIR}/kafka.out:"
  tail -n 30 -- "${SERVER_LOG}" "${LOG_DIR}/kafka.out" >&2 2>/dev/null || true
}

# wait_ready PID LOG_OFFSET: the port answers, the broker logged its start
# after LOG_OFFSET (skipped when empty), and a metadata request succeeds.
wait_ready() {
  local pid=$1 offset=$2 deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    pid_alive "${pid}" || {
      dump_logs
      rm -f -- "${PID_FILE}"
      die "broker (pid ${pid}) exited during start-up"
    }
    # grep reads a process substitution, not a pipe: with pipefail, `tail |
    # grep -q` can report SIGPIPE (141) from tail although grep matched.
    if port_is_open 127.0.0.1 "${KAFKA_PORT}" &&
      { [[ -z ${offset} ]] || grep -q 'Kafka Server started' \
        < <(tail -c "+$((offset + 1))" -- "${SERVER_LOG}" 2>/dev/null); }; then
      break
    fi
    ((SECONDS < deadline)) || {
      dump_logs
      die "broker not listening on 127.0.0.1:${KAFKA_PORT} after ${START_TIMEOUT}s"
    }
    sleep 0.5
  done
  # A listening socket is not enough: the metadata round trip proves that the
  # broker has joined its KRaft quorum and can serve clients.
  # `timeout` because the admin client retries forever on its own.
  until timeout 20 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:${KAFKA_PORT}" --list >/dev/null 2>&1; do
    ((SECONDS < deadline)) || {
      dump_logs
      die "broker on 127.0.0.1:${KAFKA_PORT} does not answer metadata requests after ${START_TIMEOUT}s"
    }
    sleep 1
  done
}

cmd_up() {
  local pid offset=0
  # In a subshell so that the fetch lock is released before the long wait.
  (cmd_fetch)
  ensure_java_and_maven
  with_lock "${KAFKA_HOME}/.broker-${KAFKA_PORT}.lock"
  if pid=$(broker_pid); then
    printf '%s\n' "${pid}" >"${PID_FILE}"
    wait_ready "${pid}" ""
    log "kafka $(kafka_version) already running (pid ${pid}) on 127.0.0.1:${KAFKA_PORT}"
    return 0
  fi
  rm -f -- "${PID_FILE}"
  local port
  for port in "${KAFKA_PORT}" "${CONTROLLER_PORT}"; do
    if port_is_open 127.0.0.1 "${port}"; then
      die "port ${port} is already in use by another process: $(describe_listener "${port}")"
    fi
  done
  render_config
  format_storage
  [[ -f ${SERVER_LOG} ]] && offset=$(stat -c %s -- "${SERVER_LOG}")
  local started=${SECONDS}
  pid=$(start_broker)
  log "starting kafka $(kafka_version) (pid ${pid}): broker 127.0.0.1:${KAFKA_PORT}, controller 127.0.0.1:${CONTROLLER_PORT}"
  wait_ready "${pid}" "${offset}"
  log "kafka ready in $((SECONDS - started))s; logs in ${LOG_DIR}"
}

cmd_down() {
  local pid deadline
  mkdir -p -- "${KAFKA_HOME}"
  with_lock "${KAFKA_HOME}/.broker-${KAFKA_PORT}.lock"
  if ! pid=$(broker_pid); then
    rm -f -- "${PID_FILE}"
    log "kafka on 127.0.0.1:${KAFKA_PORT} is not running"
    return 0
  fi
  log "stopping kafka (pid ${pid})"
  # SIGTERM triggers the broker's controlled shutdown, which flushes logs and
  # writes clean-shutdown markers so the next start skips log recovery.
  kill -TERM "${pid}" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while pid_alive "${pid}" && ((SECONDS < deadline)); do
    sleep 0.5
  done
  if pid_alive "${pid}"; then
    log "kafka did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while pid_alive "${pid}" && ((SECONDS < deadline)); do
      sleep 0.2
    done
  fi
  pid_alive "${pid}" && die "kafka (pid ${pid}) survived SIGKILL"
  rm -f -- "${PID_FILE}"
  wait_port_closed 127.0.0.1 "${KAFKA_PORT}" 10 ||
    die "kafka stopped but 127.0.0.1:${KAFKA_PORT} is still open: $(describe_listener "${KAFKA_PORT}")"
  log "kafka stopped"
}

cmd_status() {
  local pid
  if pid=$(broker_pid); then
    printf 'kafka: running (pid %s) version %s, broker 127.0.0.1:%s, controller 127.0.0.1:%s\n' \
      "${pid}" "$(kafka_version)" "${KAFKA_PORT}" "${CONTROLLER_PORT}"
    return 0
  fi
  printf 'kafka: stopped, version %s, broker 127.0.0.1:%s\n' "$(kafka_version)" "${KAFKA_PORT}"
  # LSB convention for "program is not running", so callers can branch on it.
  return 3
}

main() {
  case ${1:-} in
  fetch) cmd_fetch && log "kafka $(kafka_version) jars ready in ${LIBS_DIR}" ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    printf 'usage: %s {fetch|up|down|status}\n' "$0" >&2
    exit 2
    ;;
  esac
}

main "$@"

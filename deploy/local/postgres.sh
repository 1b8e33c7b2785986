#!/usr/bin/env bash
# Local PostgreSQL for development and tests: the Debian `postgresql` package
# and its cluster tools (pg_createcluster, pg_ctlcluster), no Docker.
#
#   deploy/local/postgres.sh install   Debian's current PostgreSQL 15 and TimescaleDB built for it (timescaledb.sh)
#   deploy/local/postgres.sh up        install, create/start the cluster, create roles, database and extension
#   deploy/local/postgres.sh down      stop the cluster
#   deploy/local/postgres.sh status    print the cluster state (exit 3 if stopped)
#
# Environment:
#   PGPORT                  TCP port on 127.0.0.1 (default 5432)
#   PACEKEEPER_PG_CLUSTER   Debian cluster name (default main)
#
# What `up` guarantees (local-only credentials from shared/DESIGN.md):
#   database pacekeeper, owned by login role pacekeeper/pacekeeper (CREATEDB,
#   because the test suite creates throwaway databases); NOLOGIN group role
#   pacekeeper_writer (read/write on pacekeeper's objects); login role
#   grafana/grafana that can read but not change anything; password (SCRAM)
#   logins over TCP on 127.0.0.1, over TLS if the client asks (sslmode=verify-full with
#   sslrootcert=<state>/postgres/tls/ca.pem); the timescaledb extension, preloaded and created in
#   the database and in template1 (databases the tests create come with it).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

PG_PORT=$(port_from_env PGPORT 5432)
CLUSTER=${PACEKEEPER_PG_CLUSTER:-main}
START_TIMEOUT=${PACEKEEPER_PG_START_TIMEOUT:-60}

DB_NAME=pacekeeper
OWNER_ROLE=pacekeeper
OWNER_PASSWORD=pacekeeper
WRITER_ROLE=pacekeeper_writer
GRAFANA_ROLE=grafana
GRAFANA_PASSWORD=grafana

have_server() {
  command -v pg_ctlcluster >/dev/null 2>&1 && [[ -n $(pg_major) ]]
}

# Newest installed server major version; Debian can hold several side by side.
pg_major() {
  local bin
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x ${bin} ]] || continue
    bin=${bin#/usr/lib/postgresql/}
    printf '%s\n' "${bin%%/*}"
  done | sort -V | tail -n 1
}

# cluster_field VERSION N: field N of our cluster's pg_lsclusters line
# (3 = port, 4 = status); empty when the cluster does not exist.
cluster_field() {
  pg_lsclusters -h 2>/dev/null |
    awk -v v="$1" -v c="${CLUSTER}" -v n="$2" '$1 == v && $2 == c { print $n }'
}

cluster_online() {
  [[ $(cluster_field "$1" 4) == online* ]]
}

# psql as the postgres superuser over the Unix socket (peer authentication).
# From / because the postgres user may not be allowed into the caller's cwd.
psql_admin() {
  (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "${PG_PORT}" "$@")
}

# The server packages and TimescaleDB, installed while no cluster runs: an apt-get that
# changes the server binaries under a running cluster breaks it (`undefined symbol`).
# When something is to change, a running cluster is stopped first and started again by `up`.
cmd_install() {
  local ver
  if "${SCRIPT_DIR}/timescaledb.sh" check; then
    return 0
  fi
  require_root "postgres.sh install"
  if have_server; then
    ver=$(pg_major)
    if cluster_online "${ver}"; then
      log "stopping cluster ${ver}/${CLUSTER} while its packages change"
      pg_ctlcluster "${ver}" "${CLUSTER}" stop -m fast
    fi
  fi
  # The package's postinst creates the first cluster with the environment's locale;
  # without one (bare containers) that is SQL_ASCII, which the test suite's throwaway
  # databases would inherit from template1. timescaledb.sh sets it for apt.
  "${SCRIPT_DIR}/timescaledb.sh" install
  have_server || die "postgresql installed but no server binaries found under /usr/lib/postgresql"
}

# Creates the cluster if needed and makes it use PG_PORT.
ensure_cluster() {
  local ver=$1 port
  port=$(cluster_field "${ver}" 3)
  if [[ -z ${port} ]]; then
    log "creating cluster ${ver}/${CLUSTER} on port ${PG_PORT}"
    # C.UTF-8 exists on every Debian system and sorts bytewise, so results
    # are the same on every machine; UTF8 for the event payloads.
    LANG=C.UTF-8 LC_ALL=C.UTF-8 pg_createcluster --port "${PG_PORT}" \
      --locale C.UTF-8 --encoding UTF8 "${ver}" "${CLUSTER}" >&2
    return 0
  fi
  if [[ ${port} != "${PG_PORT}" ]]; then
    cluster_online "${ver}" &&
      die "cluster ${ver}/${CLUSTER} is running on port ${port}, not ${PG_PORT}; run 'PGPORT=${port} $0 down' first"
    log "moving cluster ${ver}/${CLUSTER} from port ${port} to ${PG_PORT}"
    pg_conftool "${ver}" "${CLUSTER}" set port "${PG_PORT}"
  fi
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  until pg_isready -q -h 127.0.0.1 -p "${PG_PORT}"; do
    ((SECONDS < deadline)) || die "postgresql not ready on 127.0.0.1:${PG_PORT} after ${START_TIMEOUT}s"
    sleep 0.5
  done
}

start_cluster() {
  local ver=$1
  if cluster_online "${ver}"; then
    return 0
  fi
  if port_is_open 127.0.0.1 "${PG_PORT}"; then
    die "port ${PG_PORT} is already in use by another process: $(describe_listener "${PG_PORT}")"
  fi
  log "starting cluster ${ver}/${CLUSTER}"
  without_locks pg_ctlcluster "${ver}" "${CLUSTER}" start
}

# Server settings TimescaleDB needs; `up` restarts the cluster once when one changes.
#   shared_preload_libraries  the extension's library must be loaded at server start
#   timescaledb.telemetry_level=off  no phone-home from developer machines or CI
#   max_worker_processes      the launcher, one scheduler per database with the extension
#                             and the policy jobs (timescaledb.max_background_workers)
#                             come out of this pool, beside parallel query workers
TS_SETTINGS=(
  "timescaledb.telemetry_level=off"
  "timescaledb.max_background_workers=16"
  "max_worker_processes=27"
)

# configure_timescaledb VERSION: prints "restart" when a setting changed.
configure_timescaledb() {
  local ver=$1 preload setting changed=""
  preload=$(pg_conftool -s "${ver}" "${CLUSTER}" show shared_preload_libraries 2>/dev/null | tr -d "' ")
  if [[ ,${preload}, != *,timescaledb,* ]]; then
    pg_conftool "${ver}" "${CLUSTER}" set shared_preload_libraries "timescaledb${preload:+,${preload}}"
    changed=1
  fi
  for setting in "${TS_SETTINGS[@]}"; do
    if [[ $(pg_conftool -s "${ver}" "${CLUSTER}" show "${setting%%=*}" 2>/dev/null | tr -d "'") != "${setting#*=}" ]]; then
      pg_conftool "${ver}" "${CLUSTER}" set "${setting%%=*}" "${setting#*=}"
      changed=1
    fi
  done
  [[ -z ${changed} ]] || printf 'restart\n'
}

# ensure_timescaledb VERSION: the extension created where the schema and the tests need it.
ensure_timescaledb() {
  local ver=$1 loaded
  loaded=$(psql_admin -d postgres -tAc 'show shared_preload_libraries')
  [[ ,${loaded// /}, == *,timescaledb,* ]] ||
    die "timescaledb is configured but not preloaded by the running server; restart ${ver}/${CLUSTER}"
  # template1 too: databases the test suite creates then come with it.
  psql_admin -d template1 -c 'set client_min_messages = warning' -c 'create extension if not exists timescaledb'
  psql_admin -d "${DB_NAME}" -c 'set client_min_messages = warning' -c 'create extension if not exists timescaledb'
  log "timescaledb: enabled ($(psql_admin -d "${DB_NAME}" -tAc \
    "select extversion from pg_extension where extname = 'timescaledb'")) on PostgreSQL $(psql_admin -d postgres -tAc 'show server_version')"
}

# TLS that clients can verify (sslmode=verify-full): Debian's snakeoil certificate names the
# host, never 127.0.0.1, so `up` makes a local CA and a server certificate for 127.0.0.1 and
# localhost once, points the cluster at them, and copies the CA's certificate to
# <state>/postgres/tls/ca.pem for clients (sslrootcert). Prints "reload" when a setting changed.
configure_tls() {
  local ver=$1 dir setting changed=""
  dir=/etc/postgresql/${ver}/${CLUSTER}/pacekeeper-tls
  if ! openssl x509 -checkend 604800 -noout -in "${dir}/server.crt" >/dev/null 2>&1; then
    log "making a local CA and a server certificate for 127.0.0.1 in ${dir}"
    install -d -m 0700 -o postgres -g postgres -- "${dir}"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=Pacekeeper local PostgreSQL CA" -keyout "${dir}/ca.key" -out "${dir}/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
      -keyout "${dir}/server.key" -out "${dir}/server.csr" 2>/dev/null
    openssl x509 -req -in "${dir}/server.csr" -CA "${dir}/ca.crt" -CAkey "${dir}/ca.key" \
      -CAcreateserial -days 825 -out "${dir}/server.crt" \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n') 2>/dev/null
    chown postgres:postgres -- "${dir}"/*
    chmod 0600 -- "${dir}/server.key" "${dir}/ca.key"
    changed=1
  fi
  for setting in "ssl=on" "ssl_cert_file=${dir}/server.crt" "ssl_key_file=${dir}/server.key"; do
    if [[ $(pg_conftool -s "${ver}" "${CLUSTER}" show "${setting%%=*}" 2>/dev/null | tr -d "'") != "${setting#*=}" ]]; then
      pg_conftool "${ver}" "${CLUSTER}" set "${setting%%=*}" "${setting#*=}"
      changed=1
    fi
  done
  install -d -- "${STATE_DIR}/postgres/tls"
  install -m 0644 -- "${dir}/ca.crt" "${STATE_DIR}/postgres/tls/ca.pem"
  [[ -z ${changed} ]] || printf 'reload\n'
}

provision_roles_and_database() {
  log "ensuring roles ${OWNER_ROLE}, ${WRITER_ROLE}, ${GRAFANA_ROLE} and database ${DB_NAME}"
  # Cluster-wide objects. CREATE ROLE has no IF NOT EXISTS, hence the DO
  # block; passwords are set outside it because psql variables are not
  # interpolated inside dollar quotes. Re-running resets everything to the
  # documented local defaults.
  psql_admin -d postgres \
    -v owner="${OWNER_ROLE}" -v owner_password="${OWNER_PASSWORD}" \
    -v writer="${WRITER_ROLE}" \
    -v grafana="${GRAFANA_ROLE}" -v grafana_password="${GRAFANA_PASSWORD}" \
    -v db="${DB_NAME}" <<'SQL'
set pacekeeper.owner = :'owner';
set pacekeeper.writer = :'writer';
set pacekeeper.grafana = :'grafana';
do $$
declare
  r text;
begin
  foreach r in array array[current_setting('pacekeeper.owner'),
                           current_setting('pacekeeper.writer'),
                           current_setting('pacekeeper.grafana')] loop
    if not exists (select from pg_roles where rolname = r) then
      execute format('create role %I', r);
    end if;
  end loop;
end
$$;
alter role :"owner" with login createdb nosuperuser nocreaterole password :'owner_password';
alter role :"writer" with nologin nosuperuser;
alter role :"grafana" with login nocreatedb nosuperuser nocreaterole password :'grafana_password';
-- Belt and braces for the read-only role: even a missed REVOKE cannot let a
-- dashboard query write.
alter role :"grafana" set default_transaction_read_only = on;
-- A cost bound for every dashboard query: no viewer can hold the database for minutes.
alter role :"grafana" set statement_timeout = '30s';

-- template0 with an explicit UTF8/C.UTF-8 so the database does not depend on
-- how the cluster was initialised.
select format('create database %I owner %I template template0 encoding %L lc_collate %L lc_ctype %L',
              :'db', :'owner', 'UTF8', 'C.UTF-8', 'C.UTF-8')
where not exists (select from pg_database where datname = :'db') \gexec
alter database :"db" owner to :"owner";
grant connect on database :"db" to :"writer", :"grafana";
SQL

  # Objects inside the database. Grafana's table grants come from the
  # migrations, table by table: it reads KPIs, never raw events, API key
  # hashes or channel secrets. Default privileges (FOR ROLE owner, since
  # migrations run as the owner) only let it call the KPI functions.
  psql_admin -d "${DB_NAME}" \
    -v owner="${OWNER_ROLE}" -v writer="${WRITER_ROLE}" -v grafana="${GRAFANA_ROLE}" <<'SQL'
-- PostgreSQL 15 already revokes this; explicit for clusters initialised by
-- older versions and upgraded.
revoke create on schema public from public;

grant usage on schema public to :"grafana", :"writer";

alter default privileges for role :"owner" in schema public revoke select on tables from :"grafana";
grant execute on all functions in schema public to :"grafana";
alter default privileges for role :"owner" in schema public grant execute on functions to :"grafana";

grant select, insert, update, delete on all tables in schema public to :"writer";
grant usage, select on all sequences in schema public to :"writer";
grant execute on all functions in schema public to :"writer";
alter default privileges for role :"owner" in schema public
  grant select, insert, update, delete on tables to :"writer";
alter default privileges for role :"owner" in schema public grant usage, select on sequences to :"writer";
alter default privileges for role :"owner" in schema public grant execute on functions to :"writer";
SQL
}

# tcp_login USER PASSWORD: a real password login over TCP, the way services
# and Grafana connect. -w: fail instead of prompting.
tcp_login() {
  PGPASSWORD=$2 PGPASSFILE=/dev/null psql -X -w -q -h 127.0.0.1 -p "${PG_PORT}" \
    -U "$1" -d "${DB_NAME}" -tAc 'select 1' >/dev/null 2>&1
}

# Debian's pg_hba.conf allows scram-sha-256 for 127.0.0.1 out of the box; if a
# machine's file was changed, put our roles' rule first (first match wins).
ensure_tcp_password_auth() {
  local hba rule
  if tcp_login "${OWNER_ROLE}" "${OWNER_PASSWORD}" && tcp_login "${GRAFANA_ROLE}" "${GRAFANA_PASSWORD}"; then
    log "password logins over 127.0.0.1:${PG_PORT} work (scram-sha-256)"
    return 0
  fi
  hba=$(psql_admin -d postgres -tAc 'show hba_file')
  rule="host all ${OWNER_ROLE},${GRAFANA_ROLE} 127.0.0.1/32 scram-sha-256 # pacekeeper local"
  if ! grep -qF "# pacekeeper local" "${hba}"; then
    log "adding '${rule}' at the top of ${hba}"
    sed -i "1i ${rule}" "${hba}"
    psql_admin -d postgres -tAc 'select pg_reload_conf()' >/dev/null
  fi
  if ! tcp_login "${OWNER_ROLE}" "${OWNER_PASSWORD}" || ! tcp_login "${GRAFANA_ROLE}" "${GRAFANA_PASSWORD}"; then
    die "password login over 127.0.0.1:${PG_PORT} still fails; check ${hba}"
  fi
  log "password logins over 127.0.0.1:${PG_PORT} work after the pg_hba.conf change"
}

cmd_up() {
  local ver started=${SECONDS}
  require_root "postgres.sh up"
  cmd_install
  ver=$(pg_major)
  with_lock "${STATE_DIR}/postgres/.cluster.lock"
  ensure_cluster "${ver}"
  if [[ -n $(configure_timescaledb "${ver}") ]] && cluster_online "${ver}"; then
    log "timescaledb settings changed: restarting ${ver}/${CLUSTER}"
    without_locks pg_ctlcluster "${ver}" "${CLUSTER}" restart
  fi
  if [[ -n $(configure_tls "${ver}") ]] && cluster_online "${ver}"; then
    log "TLS settings changed: reloading ${ver}/${CLUSTER}"
    without_locks pg_ctlcluster "${ver}" "${CLUSTER}" reload
  fi
  start_cluster "${ver}"
  wait_ready
  provision_roles_and_database
  ensure_timescaledb "${ver}"
  ensure_tcp_password_auth
  log "postgresql ${ver} ready in $((SECONDS - started))s: postgresql://${OWNER_ROLE}@127.0.0.1:${PG_PORT}/${DB_NAME} (password: the local default)"
}

cmd_down() {
  local ver
  if ! have_server; then
    log "postgresql is not installed; nothing to stop"
    return 0
  fi
  require_root "postgres.sh down"
  ver=$(pg_major)
  with_lock "${STATE_DIR}/postgres/.cluster.lock"
  if ! cluster_online "${ver}"; then
    log "cluster ${ver}/${CLUSTER} is not running"
    return 0
  fi
  log "stopping cluster ${ver}/${CLUSTER}"
  # Fast mode: disconnects clients (tests may leave pools open) and still
  # shuts down cleanly, unlike immediate mode.
  pg_ctlcluster "${ver}" "${CLUSTER}" stop -m fast
  wait_port_closed 127.0.0.1 "${PG_PORT}" 30 ||
    die "cluster stopped but 127.0.0.1:${PG_PORT} is still open: $(describe_listener "${PG_PORT}")"
  log "postgresql stopped"
}

cmd_status() {
  local ver state timescale
  if ! have_server; then
    printf 'postgres: not installed\n'
    return 3
  fi
  ver=$(pg_major)
  state=$(cluster_field "${ver}" 4)
  timescale=$("${SCRIPT_DIR}/timescaledb.sh" status || true)
  if [[ ${state} == online* ]]; then
    printf 'postgres: running, version %s, cluster %s/%s on 127.0.0.1:%s, %s\n' \
      "${ver}" "${ver}" "${CLUSTER}" "$(cluster_field "${ver}" 3)" "${timescale}"
    return 0
  fi
  printf 'postgres: stopped, version %s, cluster %s/%s (%s)\n' \
    "${ver}" "${ver}" "${CLUSTER}" "${state:-not created}"
  # LSB convention for "program is not running", so callers can branch on it.
  return 3
}

main() {
  case ${1:-} in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    printf 'usage: %s {install|up|down|status}\n' "$0" >&2
    exit 2
    ;;
  esac
}

main "$@"

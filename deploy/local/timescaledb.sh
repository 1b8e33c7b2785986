#!/usr/bin/env bash
# TimescaleDB for the local PostgreSQL: Debian ships no package of it, so it is built
# from the release source, once per machine, against the server that runs it.
#
#   deploy/local/timescaledb.sh install   pin the server, build and install the extension (idempotent)
#   deploy/local/timescaledb.sh check     exit 0 when `install` has nothing to do, 1 otherwise
#   deploy/local/timescaledb.sh status    print what is installed (exit 3 when missing)
#
# Call `install` while the cluster is stopped: it may change the server packages, and a
# cluster that runs while its binaries change fails with `undefined symbol` errors.
# postgres.sh up does exactly that, before it starts the cluster.
#
# Environment:
#   PACEKEEPER_TIMESCALEDB_SOURCE   a release tarball or an unpacked source tree to build
#                                   (default: ../shared/vendor/timescaledb-<version>.tar.gz
#                                   beside the checkout, else the upstream release by URL)
#   PACEKEEPER_PG_VERSION           the postgresql-15 package version to run: `newest` (the
#                                   default: Debian's current security release), `installed`,
#                                   or an exact version such as 15.20-0+deb12u1
#   PACEKEEPER_CACHE_DIR            where downloads and build logs are kept (~/.cache/pacekeeper)
#
# TimescaleDB 2.28.x is the last line that supports PostgreSQL 15 (2.29 dropped it) and
# Debian bookworm ships PostgreSQL 15 only. The patches in timescaledb/ beside this script
# are applied to the release before it is built: PostgreSQL 15.20, Debian's current
# security release, refuses how 2.28.3's job runner drops its portal, which failed every
# background job (compression, retention, aggregate refresh); see the patch's header.
# The build is always against the headers of the server that runs it: a library built
# for another minor version can fail to load (`undefined symbol`).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

TS_VERSION=2.28.3
# sha256 of the unmodified upstream release (`git archive` of the tag), as vendored.
TS_SHA256=ec2f7de0ba53a473c01e0a57e09053898c6b1f7487228caff0f1d31c8cb2dedb
TS_URL=https://github.com/timescale/timescaledb/archive/refs/tags/${TS_VERSION}.tar.gz
PG_MAJOR=15
PG_VERSION=${PACEKEEPER_PG_VERSION:-newest}
PATCH_DIR=${SCRIPT_DIR}/timescaledb
CACHE_DIR=${PACEKEEPER_CACHE_DIR:-${HOME:-/root}/.cache/pacekeeper}/timescaledb
PG_CONFIG=/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config
# The server packages that must move together: a server, client or libpq of another
# minor version beside the wanted one pulls the others along.
PG_PACKAGES=(postgresql-"${PG_MAJOR}" postgresql-client-"${PG_MAJOR}" libpq5 libpq-dev postgresql-server-dev-"${PG_MAJOR}")

installed_version() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null | awk '$1 == "ii" { print $2 }'
}

# The stamp beside the installed extension says what was built against what; a server
# package of another version means the library must be built again.
stamp_file() {
  printf '%s/timescaledb.pacekeeper-build\n' "$("${PG_CONFIG}" --sharedir)/extension"
}

# The patches are part of what was built: a changed patch means another build.
patches_sum() {
  cat -- "${PATCH_DIR}"/*.patch 2>/dev/null | sha256sum | cut -c1-16
}

expected_stamp() {
  printf 'timescaledb %s (patches %s) built against postgresql-%s %s\n' \
    "${TS_VERSION}" "$(patches_sum)" "${PG_MAJOR}" "$1"
}

# ensure_server_packages: the wanted server with its headers. A version is given for
# every PostgreSQL package, or apt would take the newest minor for the headers and
# upgrade the server along with them.
ensure_server_packages() {
  local want have pkg
  local -a wanted=()
  want=$(wanted_server)
  [[ -n ${want} || ${PG_VERSION} != installed ]] ||
    die "PACEKEEPER_PG_VERSION=installed but postgresql-${PG_MAJOR} is not installed"
  if [[ -z ${want} || ${want} == "(none)" ]]; then
    require_root "installing PostgreSQL ${PG_MAJOR}"
    log "no package lists: apt-get update"
    apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
    want=$(wanted_server)
    [[ -n ${want} && ${want} != "(none)" ]] || die "no postgresql-${PG_MAJOR} package in the configured archives"
  fi
  for pkg in "${PG_PACKAGES[@]}"; do
    [[ $(installed_version "${pkg}") == "${want}" ]] || wanted+=("${pkg}=${want}")
  done
  ((${#wanted[@]} > 0)) || return 0
  require_root "installing PostgreSQL ${want} and its headers"
  have=$(installed_version "postgresql-${PG_MAJOR}")
  [[ -z ${have} || ${have} == "${want}" ]] || log "postgresql-${PG_MAJOR}: ${have} -> ${want}"
  # --allow-downgrades: PACEKEEPER_PG_VERSION may name an older release on purpose.
  LANG=C.UTF-8 LC_ALL=C.UTF-8 apt_install --allow-downgrades postgresql "${wanted[@]}"
  [[ -x ${PG_CONFIG} ]] || die "postgresql-server-dev-${PG_MAJOR} installed but ${PG_CONFIG} is missing"
}

ensure_build_tools() {
  local -a tools=()
  command -v cmake >/dev/null 2>&1 || tools+=(cmake)
  command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || tools+=(gcc make libc6-dev)
  command -v curl >/dev/null 2>&1 || tools+=(curl ca-certificates)
  command -v patch >/dev/null 2>&1 || tools+=(patch)
  ((${#tools[@]} == 0)) || apt_install "${tools[@]}"
}

# source_location: where the release comes from, first match wins.
source_location() {
  local vendored=${REPO_ROOT}/../shared/vendor/timescaledb-${TS_VERSION}.tar.gz
  if [[ -n ${PACEKEEPER_TIMESCALEDB_SOURCE:-} ]]; then
    [[ -e ${PACEKEEPER_TIMESCALEDB_SOURCE} ]] ||
      die "PACEKEEPER_TIMESCALEDB_SOURCE=${PACEKEEPER_TIMESCALEDB_SOURCE} does not exist"
    printf '%s\n' "${PACEKEEPER_TIMESCALEDB_SOURCE}"
  elif [[ -f ${vendored} ]]; then
    printf '%s\n' "${vendored}"
  else
    printf '%s\n' "${TS_URL}"
  fi
}

# unpack SOURCE DIR: the source tree of SOURCE in DIR, its version checked.
unpack() {
  local source=$1 dir=$2 tarball sum
  rm -rf -- "${dir}"
  mkdir -p -- "${dir}"
  if [[ -d ${source} ]]; then
    cp -a -- "${source}/." "${dir}/"
  else
    tarball=${source}
    if [[ ${source} == http*://* ]]; then
      tarball=${CACHE_DIR}/timescaledb-${TS_VERSION}.tar.gz
      if [[ ! -s ${tarball} ]]; then
        log "downloading ${source}"
        curl -fsSL --retry 3 -o "${tarball}.part" "${source}" || die "could not download ${source}"
        mv -- "${tarball}.part" "${tarball}"
      fi
    fi
    sum=$(sha256sum -- "${tarball}" | cut -d' ' -f1)
    if [[ ${sum} != "${TS_SHA256}" ]]; then
      # Another packing of the same tag (a host's own archive) has another checksum; the
      # version file below is what decides.
      log "note: ${tarball} has sha256 ${sum}, not the vendored release's ${TS_SHA256}"
    fi
    tar -xzf "${tarball}" -C "${dir}" --strip-components=1 || die "could not unpack ${tarball}"
  fi
  local found
  found=$(sed -n 's/^version = //p' "${dir}/version.config" 2>/dev/null)
  [[ ${found} == "${TS_VERSION}" ]] ||
    die "${source} is TimescaleDB '${found:-unknown}', expected ${TS_VERSION}"
  local patch_file
  for patch_file in "${PATCH_DIR}"/*.patch; do
    [[ -f ${patch_file} ]] || continue
    patch -d "${dir}" -p1 --forward --quiet <"${patch_file}" ||
      die "${patch_file##*/} does not apply to ${source}"
    log "timescaledb: applied ${patch_file##*/}"
  done
}

# show_progress: cmake's "[ 42%]" lines become one line per tenth, the rest goes to the log.
show_progress() {
  awk -v log_file="$1" '
    { print > log_file }
    match($0, /^\[ *[0-9]+%\]/) {
      p = substr($0, RSTART + 1, RLENGTH - 3) + 0
      if (int(p / 10) > shown) { shown = int(p / 10); printf "[infra] timescaledb: built %d%%\n", p > "/dev/stderr" }
    }'
}

build_and_install() {
  local server=$1 source work log started=${SECONDS}
  source=$(source_location)
  work=${CACHE_DIR}/build-${TS_VERSION}-pg${server}
  log=${CACHE_DIR}/build-${TS_VERSION}-pg${server}.log
  mkdir -p -- "${CACHE_DIR}"
  ensure_build_tools
  log "timescaledb: building ${TS_VERSION} from ${source} against postgresql ${server} (a few minutes, once per machine; log: ${log})"
  unpack "${source}" "${work}/src"
  : >"${log}"
  # Telemetry off: no phone-home from developer machines or CI. OpenSSL is only for
  # telemetry's HTTPS; the regression and TAP suites are upstream's, not ours.
  if ! (cd "${work}/src" && BUILD_DIR="${work}/build" BUILD_FORCE_REMOVE=true ./bootstrap \
    -DPG_CONFIG="${PG_CONFIG}" -DCMAKE_BUILD_TYPE=Release \
    -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
    -DUSE_OPENSSL=OFF -DSEND_TELEMETRY_DEFAULT=NO) >>"${log}" 2>&1; then
    # CMake's own message, one line of it, instead of its whole dump.
    die "timescaledb: cannot configure the build: $(grep -m 1 -A 2 'CMake Error' "${log}" |
      sed -n '2,3p' | tr -s ' \n' ' ')(${log})"
  fi
  if ! make -C "${work}/build" -j"$(nproc)" 2>&1 | show_progress "${log}.make"; then
    cat -- "${log}.make" >>"${log}"
    die "timescaledb: compilation failed: $(grep -m 1 -E 'error' -- "${log}") (${log})"
  fi
  cat -- "${log}.make" >>"${log}" && rm -f -- "${log}.make"
  make -C "${work}/build" install >>"${log}" 2>&1 || die "timescaledb: make install failed; see ${log}"
  expected_stamp "${server}" >"$(stamp_file)"
  # The build tree is only needed again for another server version; the tarball stays.
  rm -rf -- "${work}"
  log "timescaledb: ${TS_VERSION} installed in $((SECONDS - started))s"
}

# candidate_version: what `apt-get install postgresql-15` would install now.
candidate_version() {
  apt-cache policy "postgresql-${PG_MAJOR}" 2>/dev/null | awk '/Candidate:/ { print $2 }'
}

# wanted_server: the postgresql-15 version to run; empty when none can be named.
wanted_server() {
  local version
  case ${PG_VERSION} in
  installed) installed_version "postgresql-${PG_MAJOR}" ;;
  newest)
    version=$(candidate_version)
    if [[ -z ${version} || ${version} == "(none)" ]]; then
      # No package lists yet (fresh images): what is installed, if anything, until
      # ensure_server_packages has refreshed them.
      version=$(installed_version "postgresql-${PG_MAJOR}")
    fi
    printf '%s\n' "${version}"
    ;;
  *) printf '%s\n' "${PG_VERSION}" ;;
  esac
}

# True when the extension built for the wanted server is in place.
extension_current() {
  local server
  server=$(wanted_server)
  [[ -n ${server} && $(installed_version "postgresql-${PG_MAJOR}") == "${server}" &&
    -x ${PG_CONFIG} && -f $(stamp_file) && $(<"$(stamp_file)") == "$(expected_stamp "${server}")" &&
    -f $("${PG_CONFIG}" --pkglibdir)/timescaledb-${TS_VERSION}.so ]]
}

cmd_check() {
  local pkg server
  server=$(wanted_server)
  for pkg in "${PG_PACKAGES[@]}"; do
    [[ $(installed_version "${pkg}") == "${server}" ]] || return 1
  done
  extension_current
}

cmd_install() {
  ensure_server_packages
  extension_current && return 0
  require_root "installing TimescaleDB into PostgreSQL's directories"
  build_and_install "$(installed_version "postgresql-${PG_MAJOR}")"
}

cmd_status() {
  if [[ -x ${PG_CONFIG} && -f $(stamp_file) ]]; then
    printf 'timescaledb: %s\n' "$(<"$(stamp_file)")"
    return 0
  fi
  printf 'timescaledb: not installed\n'
  return 3
}

main() {
  case ${1:-} in
  install) cmd_install ;;
  check) cmd_check ;;
  status) cmd_status ;;
  *)
    printf 'usage: %s {install|check|status}\n' "$0" >&2
    exit 2
    ;;
  esac
}

main "$@"

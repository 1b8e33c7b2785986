"""The Docker and observability configs keep DESIGN.md's contracts (no Docker needed).

Ports, the read-only Grafana login, dashboards that read KPIs only through kpis / kpi_value /
kpi_series, and Prometheus/Alertmanager configs that their own checkers accept.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.aggregator.settings import AggregatorSettings
from services.alerts.settings import AlertsSettings
from services.ingest.settings import IngestSettings
from shared.settings import BaseServiceSettings
from tests.deploy.dashboards import ROOT, load_dashboards, panels, sql_queries

pytestmark = pytest.mark.unit

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
PROMETHEUS_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_ENTRYPOINT = ROOT / "deploy" / "alertmanager" / "entrypoint.sh"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"
POSTGRES_INIT = ROOT / "deploy" / "postgres" / "init"

# DESIGN.md "Defaults (local)": service → the port it serves on, published on the host.
PORTS = {
    "ingest": 8080,
    "aggregator": 8081,
    "alerts": 8082,
    "kafka": 9092,
    "postgres": 5432,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
}
APP_SERVICES = ("ingest", "aggregator", "alerts")
# Each service's settings and the fields that hold the address it serves on.
SERVICE_SETTINGS: dict[str, tuple[type[BaseServiceSettings], str, str]] = {
    "ingest": (IngestSettings, "ingest_host", "ingest_port"),
    "aggregator": (AggregatorSettings, "aggregator_health_host", "aggregator_health_port"),
    "alerts": (AlertsSettings, "alerts_host", "alerts_port"),
}

# What dashboard SQL may touch: the KPI contract, nothing else (not kpi_points, events, ...).
CONTRACT_RELATIONS = {"kpis", "kpi_series", "goal_readings", "goal_reading_history"}
CONTRACT_FUNCTIONS = {"kpi_series", "kpi_value"}
# Set-returning built-ins a query may read FROM like a table.
SQL_TABLE_FUNCTIONS = {"jsonb_array_elements", "jsonb_each_text"}
SQL_BUILTINS = {"nullif", "coalesce", "jsonb_object_keys", "count", "string_agg", "round"}
SQL_KEYWORDS_BEFORE_PARENS = {"from", "in", "array", "filter"}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def with_defaults(value: str) -> str:
    """What Compose makes of `${VAR:-default}` when VAR is unset; `$$` is a literal `$`."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each `ports` entry, defaults filled in."""
    result = []
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = with_defaults(entry).split(":")
        result.append((host_ip, int(host_port), int(container_port)))
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, so anchors can merge it"
    return {key: with_defaults(str(value)) for key, value in env.items()}


def test_compose_has_every_part_of_the_stack(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {*PORTS, "migrate"}


@pytest.mark.parametrize(("name", "port"), PORTS.items())
def test_compose_publishes_the_design_ports_on_localhost_only(
    services: dict[str, dict[str, Any]], name: str, port: int
) -> None:
    host_ports = [(ip, host) for ip, host, _ in published(services[name])]
    assert host_ports == [("127.0.0.1", port)]


def test_only_long_running_services_publish_ports(services: dict[str, dict[str, Any]]) -> None:
    assert "ports" not in services["migrate"]


@pytest.mark.parametrize("name", sorted(PORTS))
def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    check = services[name].get("healthcheck")
    assert check
    assert check.get("test")
    assert not check.get("disable")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_probe_their_own_healthz_without_curl(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    port = PORTS[name]
    assert published(service) == [("127.0.0.1", port, port)]
    test = " ".join(service["healthcheck"]["test"])
    assert "curl" not in test
    assert "urllib" in test
    assert f"http://127.0.0.1:{port}/healthz" in test
    assert service["command"] == ["run", name]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_environment_is_what_the_service_settings_read(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service listens on all interfaces of its container, on its DESIGN.md port."""
    for key in [k for k in os.environ if k.startswith("PACEKEEPER_")]:
        monkeypatch.delenv(key)
    for key, value in environment(services[name]).items():
        monkeypatch.setenv(key, value)
    settings_class, host_field, port_field = SERVICE_SETTINGS[name]
    settings = settings_class()
    assert getattr(settings, host_field) == "0.0.0.0"
    assert getattr(settings, port_field) == PORTS[name]
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.environment == "local"


@pytest.mark.parametrize("name", [*APP_SERVICES, "migrate"])
def test_app_containers_share_one_image_and_settings(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert service["image"] == services["ingest"]["image"]
    env = environment(service)
    assert env["PACEKEEPER_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["PACEKEEPER_DATABASE_URL"] == (
        "postgresql+psycopg://pacekeeper:pacekeeper@postgres:5432/pacekeeper"
    )
    assert env["PACEKEEPER_ADMIN_TOKEN"] == "pacekeeper-local-admin"
    assert "PACEKEEPER_TIMEZONE" in env


def test_migrate_runs_once_before_the_services(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["kafka"] == {"condition": "service_healthy"}


def test_dependencies_wait_for_health_that_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            condition = spec["condition"]
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            else:
                assert condition == "service_completed_successfully"
                assert target == "migrate"


def test_kafka_is_one_kraft_node_with_inside_and_host_listeners(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["INTERNAL"] == "kafka:9092"
    assert advertised["EXTERNAL"] == "127.0.0.1:9092"
    # The host port maps onto the EXTERNAL listener, the network reaches INTERNAL directly.
    [(_, _, container_port)] = published(kafka)
    assert listeners["EXTERNAL"] == f":{container_port}"
    assert listeners["INTERNAL"] == ":9092"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_postgres_is_timescaledb_with_the_roles_script(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    script = (ROOT / "deploy" / "local" / "timescaledb.sh").read_text(encoding="utf-8")
    version = re.search(r"^TS_VERSION=(\S+)$", script, re.M)
    major = re.search(r"^PG_MAJOR=(\d+)$", script, re.M)
    assert version, "deploy/local/timescaledb.sh names the release it builds"
    assert major
    # Compose runs the same release on the same PostgreSQL major as the local build.
    assert postgres["image"] == f"timescale/timescaledb:{version[1]}-pg{major[1]}"
    env = environment(postgres)
    assert env["POSTGRES_DB"] == "pacekeeper"
    assert env["PACEKEEPER_DB_PASSWORD"] == "pacekeeper"
    assert env["PACEKEEPER_GRAFANA_DB_PASSWORD"] == "grafana"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    mounts = [volume.split(":")[:2] for volume in postgres["volumes"]]
    init_mounts = [m for m in mounts if m[1].startswith("/docker-entrypoint-initdb.d")]
    # Files, not the folder: the image's own TimescaleDB scripts live there too.
    assert init_mounts
    assert all(m[1] != "/docker-entrypoint-initdb.d" for m in init_mounts)


def test_init_sql_creates_a_read_only_grafana_role() -> None:
    sql = "\n".join(p.read_text(encoding="utf-8") for p in sorted(POSTGRES_INIT.glob("*.sql")))
    code = "\n".join(line.split("--")[0] for line in sql.splitlines()).lower()
    assert "create extension if not exists timescaledb" in code
    assert re.search(r"create role grafana login", code)
    assert "default_transaction_read_only = on" in code
    assert "alter role grafana set statement_timeout = '30s'" in code
    assert "alter default privileges for role pacekeeper" in code
    # Table access is granted table by table in the migrations; channels hold secrets.
    assert not re.search(r"grant\s+(select|all)[^;]*\bon\s+(all\s+)?tables\b", code)
    assert not re.search(r"grant\s+(insert|update|delete|truncate|create)", code)


def test_bind_mounts_and_named_volumes_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_grafana_admin_is_not_anonymous(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"]
    raw = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert raw.startswith("${PACEKEEPER_GRAFANA_ADMIN_PASSWORD:-"), "settable from the env"


def test_dockerfile_builds_one_non_root_image_from_the_lock() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2, "multi-stage"
    assert "requirements.lock" in text
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.MULTILINE)
    assert 'ENTRYPOINT ["pacekeeper"]' in text


def test_dockerignore_keeps_local_state_out() -> None:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "allow-list: everything is ignored first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "requirements.lock", "shared", "services"} <= allowed
    assert not allowed & {".venv", ".local", ".git", "tests"}


# --- Grafana ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((GRAFANA / "datasources").glob("*.yaml")):
        for source in load_yaml(path)["datasources"]:
            found[source["uid"]] = source
    return found


def test_grafana_reads_postgres_as_the_read_only_user(
    datasources: dict[str, dict[str, Any]],
) -> None:
    (postgres,) = [s for s in datasources.values() if s["type"] == "grafana-postgresql-datasource"]
    assert postgres["user"] == "grafana"
    assert postgres["url"] == f"postgres:{PORTS['postgres']}"
    assert postgres["jsonData"]["database"] == "pacekeeper"
    assert postgres["secureJsonData"]["password"] == "$PACEKEEPER_GRAFANA_DB_PASSWORD"
    (prometheus,) = [s for s in datasources.values() if s["type"] == "prometheus"]
    assert prometheus["url"] == f"http://prometheus:{PORTS['prometheus']}"


def test_dashboard_provider_points_at_the_mounted_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    (path,) = sorted((GRAFANA / "dashboards").glob("*.yaml"))
    (provider,) = load_yaml(path)["providers"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    relative = Path(home).relative_to(provider["options"]["path"])
    assert (ROOT / "deploy" / "grafana" / "dashboards" / relative).is_file()


def test_dashboards_are_grafana_11_json_with_known_datasources(
    datasources: dict[str, dict[str, Any]],
) -> None:
    dashboards = load_dashboards()
    assert {d["title"] for d in dashboards.values()} == {
        "Pacekeeper — KPIs",
        "Pacekeeper — goals",
        "Pacekeeper — pipeline",
    }
    for name, dashboard in dashboards.items():
        assert dashboard["schemaVersion"] >= 39, name
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        for panel in panels(dashboard):
            targets = panel.get("targets", [])
            refs = [panel.get("datasource"), *(t.get("datasource") for t in targets)]
            for ref in filter(None, refs):
                assert ref["uid"] in datasources, f"{name}: {panel['title']} uses {ref}"
                assert ref["type"] == datasources[ref["uid"]]["type"]


def test_kpi_dashboard_lists_kpis_and_repeats_a_series_and_a_stat_per_kpi() -> None:
    dashboard = load_dashboards()["pacekeeper-kpis.json"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["kpi"]["query"] == "SELECT name FROM kpis ORDER BY 1"
    assert variables["kpi"]["multi"]
    assert variables["kpi"]["includeAll"]
    repeated = {p["type"]: p for p in panels(dashboard) if p.get("repeat") == "kpi"}
    assert {"timeseries", "stat"} <= set(repeated)
    assert "kpi_series(" in repeated["timeseries"]["targets"][0]["rawSql"]
    assert "kpi_value(" in repeated["stat"]["targets"][0]["rawSql"]


def _strip_literals(sql: str) -> str:
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)  # string literals
    sql = re.sub(r"--[^\n]*", "", sql)  # comments
    sql = re.sub(r'"[^"]*"', '""', sql)  # quoted identifiers (column aliases)
    sql = re.sub(r"\$\{\w+(?::\w+)?\}", "''", sql)  # Grafana variables
    return re.sub(r"\$__\w+(?:\(\))?", "''", sql)  # Grafana macros


def _dashboard_sql() -> list[tuple[str, str]]:
    return [
        (query.where, query.sql)
        for name, dashboard in load_dashboards().items()
        for query in sql_queries(name, dashboard)
    ]


def test_kpi_dashboard_has_sql_at_all() -> None:
    assert len(_dashboard_sql()) >= 4


@pytest.mark.parametrize(("where", "sql"), _dashboard_sql())
def test_dashboard_sql_uses_only_the_kpi_contract(where: str, sql: str) -> None:
    code = _strip_literals(sql).lower()
    relations = set(re.findall(r"\b(?:from|join)\s+([a-z_][\w.]*)", code))
    readable = CONTRACT_RELATIONS | SQL_TABLE_FUNCTIONS
    assert relations <= readable, f"{where} reads {relations - readable}"
    calls = set(re.findall(r"\b([a-z_][\w.]*)\s*\(", code))
    allowed = CONTRACT_FUNCTIONS | SQL_TABLE_FUNCTIONS | SQL_BUILTINS | SQL_KEYWORDS_BEFORE_PARENS
    assert calls <= allowed, f"{where} calls {calls - allowed}"
    assert relations | (calls & CONTRACT_FUNCTIONS), f"{where} uses no contract function or table"
    assert ";" not in code, f"{where}: one statement per query"


def test_kpi_names_are_quoted_by_grafana_not_by_hand() -> None:
    # A multi-value variable is already quoted by the data source: '$kpi' would become
    # ''orders''. ${kpi:sqlstring} quotes and escapes exactly once.
    for where, sql in _dashboard_sql():
        assert "'$kpi'" not in sql, where
        assert "'${kpi}'" not in sql, where


# --- Prometheus and Alertmanager ---------------------------------------------------------


def test_prometheus_scrapes_the_three_services_and_alerts_via_alertmanager() -> None:
    config = load_yaml(PROMETHEUS)
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    for name in APP_SERVICES:
        assert targets[f"pacekeeper-{name}"] == [f"{name}:{PORTS[name]}"]
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == [
        f"alertmanager:{PORTS['alertmanager']}"
    ]
    assert config["rule_files"] == ["rules/*.yml"]
    assert PROMETHEUS_RULES


def test_every_pipeline_alert_has_a_severity_and_a_summary() -> None:
    alerts = [
        rule
        for path in PROMETHEUS_RULES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert alerts
    for rule in alerts:
        assert rule["alert"].startswith("Pacekeeper"), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


_COLLECTOR = re.compile(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(pacekeeper_\w+)\"")
# A metric name in PromQL; `job:pacekeeper_...:rate5m` recording rules are preceded by ":".
_PROMQL_METRIC = re.compile(r"(?<![\w:])(pacekeeper_\w+)")
_SERIES_SUFFIXES = ("_bucket", "_count", "_sum")


def defined_metrics() -> set[str]:
    return {
        name
        for path in (ROOT / "services").rglob("*.py")
        for name in _COLLECTOR.findall(path.read_text(encoding="utf-8"))
    }


def promql_expressions() -> list[tuple[str, str]]:
    found = [
        (f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for path in PROMETHEUS_RULES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]
    for name, dashboard in load_dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append((f"{name}: {panel['title']} {target['refId']}", target["expr"]))
    return found


def test_rules_and_dashboards_use_metrics_the_services_define() -> None:
    defined = defined_metrics()
    assert defined, "no prometheus_client collectors found under services/"
    for where, expr in promql_expressions():
        for name in _PROMQL_METRIC.findall(expr):
            base = name.removesuffix(next((s for s in _SERIES_SUFFIXES if name.endswith(s)), ""))
            assert name in defined or base in defined, f"{where}: {name} is not defined"


def test_alertmanager_groups_and_sends_to_the_env_webhook() -> None:
    config = load_yaml(ALERTMANAGER)
    route = config["route"]
    assert route["group_by"] == ["alertname", "severity"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert route["receiver"] in receivers
    (webhook,) = receivers[route["receiver"]]["webhook_configs"]
    script = ALERTMANAGER_ENTRYPOINT.read_text(encoding="utf-8")
    assert f"placeholder={webhook['url']}\n" in script
    assert "PACEKEEPER_ALERTMANAGER_WEBHOOK_URL" in script


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} not installed (Debian: prometheus / prometheus-alertmanager)")
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_config_and_rules() -> None:
    result = _run("promtool", "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", PROMETHEUS_TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests_pass(path: Path) -> None:
    result = _run("promtool", "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_accepts_the_config() -> None:
    result = _run("amtool", "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr

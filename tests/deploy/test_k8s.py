"""The Kubernetes manifests (deploy/k8s, kustomize) hold what an operator relies on.

The kustomization is read as kustomize reads it (resources, generators, namespace), every
built-in object is validated against the Kubernetes JSON schemas that kubernetes-validate
ships, and then the facts that could regress are checked against the code itself: probes on
the paths and ports the services serve, env names the settings classes define, secrets only
as placeholders that production refuses, replicas bounded by partitions, graceful shutdown
longer than the services' own timeouts. No cluster and no kustomize binary are needed;
where `kustomize` or `kubectl` is installed, its build must give the same objects.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from alembic.script import ScriptDirectory
from pydantic import SecretStr, ValidationError

from services.aggregator.settings import AggregatorSettings
from services.alerts.settings import AlertsSettings
from services.ingest.settings import IngestSettings
from shared.migrations import alembic_config
from shared.settings import DLQ_TOPIC, EVENTS_TOPIC, KPI_UPDATES_TOPIC, BaseServiceSettings
from tests.deploy.dashboards import ROOT

pytestmark = pytest.mark.unit

K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "pacekeeper"
IMAGE = "pacekeeper"  # the name every container uses and `images:` rewrites
# The oldest Kubernetes minor these manifests support (autoscaling/v2, policy/v1,
# unhealthyPodEvictionPolicy) and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Parts of deploy/k8s that the default kustomization leaves out on purpose.
OPTIONAL = {
    Path("components/keda"): "needs KEDA's CRDs; an overlay adds the component",
    Path("external/kafka-topics.yaml"): "Strimzi KafkaTopics, applied in Kafka's namespace",
}
KEDA = K8S / "components" / "keda"
KAFKA_TOPICS = K8S / "external" / "kafka-topics.yaml"

# DESIGN.md "Defaults (local)": the port each service serves on.
PORTS = {"ingest": 8080, "aggregator": 8081, "alerts": 8082}
SERVICES = tuple(PORTS)
# The settings class each container reads, by container name.
SETTINGS: dict[str, type[BaseServiceSettings]] = {
    "ingest": IngestSettings,
    "aggregator": AggregatorSettings,
    "alerts": AlertsSettings,
    "migrate": BaseServiceSettings,
    "wait-for-schema": BaseServiceSettings,
}
PORT_FIELDS = {
    "ingest": "ingest_port",
    "aggregator": "aggregator_health_port",
    "alerts": "alerts_port",
}
HOST_FIELDS = {
    "ingest": "ingest_host",
    "aggregator": "aggregator_health_host",
    "alerts": "alerts_host",
}
SHUTDOWN_FIELDS = {
    "ingest": "ingest_shutdown_timeout",
    "aggregator": "aggregator_shutdown_timeout",
    "alerts": "alerts_shutdown_timeout_seconds",
}
# Past a service's own shutdown timeout: the producer's flush, the relay's drain, leaving
# the consumer group.
SHUTDOWN_MARGIN_SECONDS = 10
PLACEHOLDER = re.compile(r"change-?me", re.IGNORECASE)
COMPONENT = "app.kubernetes.io/component"


# --- kustomize, as far as these manifests use it ----------------------------------------


@dataclass
class Build:
    objects: list[dict[str, Any]] = field(default_factory=list)
    files: set[Path] = field(default_factory=set)  # every file the build read


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def read_env_file(path: Path) -> dict[str, str]:
    """A kustomize `envs` file: KEY=VALUE lines, `#` comments and blank lines skipped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not KEY=VALUE"
        assert key not in values, f"{path.name}:{number}: {key} twice"
        values[key] = value
    return values


def generated(kind: str, spec: dict[str, Any], directory: Path, build: Build) -> dict[str, Any]:
    data: dict[str, str] = {}
    for name in spec.get("envs", []):
        build.files.add(directory / name)
        data |= read_env_file(directory / name)
    for name in spec.get("files", []):
        build.files.add(directory / name)
        data[Path(name).name] = (directory / name).read_text(encoding="utf-8")
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


def kustomize(directory: Path) -> Build:
    """The objects of a kustomization, without the generators' name hashes (kustomize
    rewrites every reference along with the name, so base names stand for both)."""
    path = directory / "kustomization.yaml"
    (kustomization,) = load_yaml_documents(path)
    build = Build(files={path})
    for entry in kustomization.get("resources", []):
        target = directory / entry
        if target.is_dir():
            nested = kustomize(target)
            build.objects += nested.objects
            build.files |= nested.files
        else:
            build.files.add(target)
            build.objects += load_yaml_documents(target)
    for spec in kustomization.get("configMapGenerator", []):
        build.objects.append(generated("ConfigMap", spec, directory, build))
    for spec in kustomization.get("secretGenerator", []):
        build.objects.append(generated("Secret", spec, directory, build))
    if "namespace" in kustomization:
        for obj in build.objects:
            if obj["kind"] != "Namespace":
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return build


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    (found,) = load_yaml_documents(K8S / "kustomization.yaml")
    return found


@pytest.fixture(scope="module")
def build() -> Build:
    return kustomize(K8S)


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = find(objects, kind, name)
    return found


def pod_specs(build: Build) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload kind/name, pod spec) of every Deployment and Job."""
    for obj in build.objects:
        if obj["kind"] in {"Deployment", "Job"}:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def deployment(build: Build, service: str) -> dict[str, Any]:
    return one(build.objects, "Deployment", service)


def main_container(build: Build, service: str) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = deployment(build, service)["spec"]["template"]["spec"]["containers"]
    assert container["name"] == service
    return container


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def effective_env(build: Build, container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: envFrom first, then `env`, which wins."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= one(build.objects, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= decoded(one(build.objects, "Secret", source["secretRef"]["name"]))
    for var in container.get("env", []):
        assert "value" in var, f"{var['name']}: a literal value, or extend this test"
        env[var["name"]] = var["value"]
    return env


def env_names(cls: type[BaseServiceSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def secret_env_names(cls: type[BaseServiceSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return {
        f"{prefix}{name}".upper()
        for name, info in cls.model_fields.items()
        if SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))
    }


ALL_SETTINGS_NAMES = set().union(*(env_names(cls) for cls in SETTINGS.values()))
ALL_SECRET_NAMES = set().union(*(secret_env_names(cls) for cls in SETTINGS.values()))


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read os.environ too: only the manifests' values may count."""
    for key in [k for k in os.environ if k.startswith("PACEKEEPER_")]:
        monkeypatch.delenv(key)


def settings_for(cls: type[BaseServiceSettings], env: dict[str, str]) -> BaseServiceSettings:
    prefix = cls.model_config.get("env_prefix", "")
    values: dict[str, Any] = {k.removeprefix(prefix).lower(): v for k, v in env.items()}
    return cls(**values)


def with_real_secrets(env: dict[str, str]) -> dict[str, str]:
    """The env as an operator's overlay would make it: placeholders replaced."""
    return env | {
        "PACEKEEPER_ADMIN_TOKEN": secrets.token_hex(32),
        "PACEKEEPER_DATABASE_URL": env["PACEKEEPER_DATABASE_URL"].replace(
            ":CHANGE-ME@", f":{secrets.token_hex(16)}@"
        ),
    }


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert isinstance(number, int)
    return number


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?$")
_UNITS = {None: 1.0, "m": 1e-3, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}


def quantity(value: str | int) -> float:
    found = _QUANTITY.match(str(value))
    assert found, f"unexpected quantity {value!r}"
    return float(found[1]) * _UNITS[found[2]]


# --- the files ---------------------------------------------------------------------------


def test_kustomization_sets_the_namespace_labels_and_image(kustomization: dict[str, Any]) -> None:
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    (labels,) = kustomization["labels"]
    assert labels["pairs"]["app.kubernetes.io/part-of"] == "pacekeeper"
    assert labels.get("includeSelectors") is False, "selectors are immutable once applied"
    (image,) = kustomization["images"]
    assert image["name"] == IMAGE
    assert image["newTag"]
    assert image["newTag"] != "latest"
    # An overlay's `images: [{name: pacekeeper, newName: REGISTRY/...}]` matches the name as
    # the base leaves it: a registry set here would hide it.
    assert "newName" not in image
    assert "components" not in kustomization, "components are optional: an overlay adds them"


def test_every_file_is_built_or_deliberately_optional(build: Build) -> None:
    present = {
        p.relative_to(K8S) for p in K8S.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    used = {p.relative_to(K8S) for p in build.files}
    for optional in OPTIONAL:
        assert (K8S / optional).exists(), f"{optional} is declared optional but missing"
        assert not any(p == optional or optional in p.parents for p in used), (
            f"{optional} is optional ({OPTIONAL[optional]}) but the default build reads it"
        )
    unaccounted = {p for p in present - used if not any(o == p or o in p.parents for o in OPTIONAL)}
    assert not unaccounted, f"neither in kustomization.yaml nor optional: {sorted(unaccounted)}"


def test_the_build_has_every_part(build: Build) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in build.objects}
    expected = {
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "pacekeeper"),
        ("ConfigMap", "pacekeeper-config"),
        ("ConfigMap", "pacekeeper-wait-for-schema"),
        ("Secret", "pacekeeper-secrets"),
        ("Job", "migrate"),
        ("HorizontalPodAutoscaler", "ingest"),
    }
    for service in SERVICES:
        expected |= {(k, service) for k in ("Deployment", "Service", "PodDisruptionBudget")}
    assert names == expected
    for obj in build.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_kubernetes(build: Build, version: str) -> None:
    """Strict: an unknown or misplaced field (a typo such as `readinesProbe`) fails too."""
    for obj in build.objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} is not valid Kubernetes {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message} (a CRD belongs in an optional component)")


# --- probes, ports, processes ------------------------------------------------------------


def app_paths(service: str) -> set[str]:
    """The paths the service's HTTP server really serves (its app is built, not started)."""
    if service == "ingest":
        from services.ingest.ops import router

        routes = router.routes
    elif service == "aggregator":
        from shared.health import health_app

        async def ready() -> bool:
            return True

        routes = health_app(service, ready).routes
    else:
        from services.alerts.app import create_app

        routes = create_app(AlertsSettings(), run_worker=False).routes
    return {getattr(route, "path", "") for route in routes}


@pytest.mark.parametrize("service", SERVICES)
def test_probes_hit_paths_the_service_serves_on_its_port(
    build: Build, service: str, clean_environ: None
) -> None:
    container = main_container(build, service)
    settings = settings_for(SETTINGS[service], with_real_secrets(effective_env(build, container)))
    port = getattr(settings, PORT_FIELDS[service])
    assert port == PORTS[service]
    assert getattr(settings, HOST_FIELDS[service]) == "0.0.0.0", "reachable from the kubelet"
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    served = app_paths(service)
    for probe, path in expected.items():
        assert probe in container, f"{service} has no {probe}"
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{service} {probe}"
        assert path in served, f"{service} does not serve {path}"
        assert port_number(container, get["port"]) == port, f"{service} {probe} port"
    # The liveness probe must not kill a pod for a broker or database outage.
    assert container["livenessProbe"]["httpGet"]["path"] != "/readyz"


@pytest.mark.parametrize("service", SERVICES)
def test_service_and_scrape_annotations_reach_the_container_port(
    build: Build, service: str, clean_environ: None
) -> None:
    pod = deployment(build, service)["spec"]["template"]
    container = main_container(build, service)
    svc = one(build.objects, "Service", service)
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert matches(svc["spec"]["selector"], pod["metadata"]["labels"])
    assert svc["spec"]["selector"][COMPONENT] == service, "one component per Service"
    (port,) = svc["spec"]["ports"]
    assert port["port"] == PORTS[service]
    assert port_number(container, port["targetPort"]) == PORTS[service]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORTS[service])
    assert annotations["prometheus.io/path"] in app_paths(service)


def test_containers_run_the_one_image_with_the_right_command(build: Build) -> None:
    for where, spec in pod_specs(build):
        for container in all_containers(spec):
            assert container["image"] == IMAGE, f"{where}: {container['name']}"
    for service in SERVICES:
        assert main_container(build, service)["args"] == ["run", service]
    (job,) = one(build.objects, "Job", "migrate")["spec"]["template"]["spec"]["containers"]
    assert job["args"] == ["migrate"]
    assert "command" not in job, "the image's entrypoint is `pacekeeper`"


# --- settings: names, secrets, placeholders ----------------------------------------------


def test_config_map_holds_only_known_non_secret_settings(build: Build) -> None:
    config = one(build.objects, "ConfigMap", "pacekeeper-config")["data"]
    unknown = set(config) - ALL_SETTINGS_NAMES
    assert not unknown, f"no settings class defines {sorted(unknown)}"
    leaked = set(config) & ALL_SECRET_NAMES
    assert not leaked, f"secrets in the ConfigMap: {sorted(leaked)}"
    assert config["PACEKEEPER_ENVIRONMENT"] == "production", "refuse the local defaults"


@pytest.mark.parametrize(
    ("where", "container"),
    [
        pytest.param(where, c, id=f"{where}/{c['name']}")
        for where, spec in pod_specs(kustomize(K8S))
        for c in all_containers(spec)
    ],
)
def test_container_env_is_what_its_settings_read(
    build: Build, where: str, container: dict[str, Any]
) -> None:
    cls = SETTINGS[container["name"]]
    own = {var["name"] for var in container.get("env", [])}
    assert own <= env_names(cls), f"{cls.__name__} does not define {sorted(own - env_names(cls))}"
    assert not own & ALL_SECRET_NAMES, "secrets come from the Secret, not literal env"
    assert set(effective_env(build, container)) <= ALL_SETTINGS_NAMES
    sources = {next(iter(s.values()))["name"] for s in container.get("envFrom", [])}
    assert sources == {"pacekeeper-config", "pacekeeper-secrets"}, where


def test_secret_holds_the_secret_settings_as_placeholders_only(
    build: Build, kustomization: dict[str, Any]
) -> None:
    (generator,) = kustomization["secretGenerator"]
    assert "literals" not in generator, "a literal in kustomization.yaml would be committed"
    for name in generator["envs"]:
        assert name.endswith(".example.env"), f"{name}: only examples are committed"
    values = decoded(one(build.objects, "Secret", "pacekeeper-secrets"))
    assert set(values) <= ALL_SECRET_NAMES, "only SecretStr settings belong in the Secret"
    assert {"PACEKEEPER_DATABASE_URL", "PACEKEEPER_ADMIN_TOKEN"} <= set(values)
    for key, value in values.items():
        assert PLACEHOLDER.search(value), f"{key} holds something other than a placeholder"


def test_no_secret_object_is_committed() -> None:
    for path in [*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")]:
        for doc in load_yaml_documents(path):
            assert doc.get("kind") != "Secret", f"{path.relative_to(ROOT)} commits a Secret"


@pytest.mark.parametrize("service", SERVICES)
def test_production_refuses_the_placeholders_and_takes_real_values(
    build: Build, service: str, clean_environ: None
) -> None:
    """A forgotten placeholder stops every pod at start-up instead of running with it."""
    env = effective_env(build, main_container(build, service))
    with pytest.raises(ValidationError, match="PACEKEEPER_ADMIN_TOKEN"):
        settings_for(SETTINGS[service], env)
    settings = settings_for(SETTINGS[service], with_real_secrets(env))
    assert settings.environment == "production"


# --- scaling ------------------------------------------------------------------------------


def partitions(build: Build, service: str) -> tuple[int, int]:
    """(ingest's, aggregator's) partition count as the containers see them."""
    env = with_real_secrets(effective_env(build, main_container(build, service)))
    ingest = settings_for(IngestSettings, env)
    aggregator = settings_for(AggregatorSettings, env)
    assert isinstance(ingest, IngestSettings)
    assert isinstance(aggregator, AggregatorSettings)
    return ingest.ingest_topic_partitions, aggregator.aggregator_topic_partitions


def test_ingest_scales_on_cpu_through_its_autoscaler(build: Build) -> None:
    hpa = one(build.objects, "HorizontalPodAutoscaler", "ingest")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    ingest = deployment(build, target["name"])
    assert ingest["metadata"]["name"] == "ingest"
    assert "replicas" not in ingest["spec"], "the autoscaler owns the count"
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    # Utilization is measured against the request: without one the HPA cannot act.
    for container in ingest["spec"]["template"]["spec"]["containers"]:
        assert "cpu" in container["resources"]["requests"]


def test_ingest_runs_one_worker_per_pod(build: Build, clean_environ: None) -> None:
    env = with_real_secrets(effective_env(build, main_container(build, "ingest")))
    settings = settings_for(IngestSettings, env)
    assert getattr(settings, "ingest_workers", 1) == 1, "the autoscaler adds pods"


def test_aggregator_replicas_stay_within_the_partitions(build: Build, clean_environ: None) -> None:
    ingest_partitions, aggregator_partitions = partitions(build, "aggregator")
    assert ingest_partitions == aggregator_partitions, "one topic, one partition count"
    spec = deployment(build, "aggregator")["spec"]
    assert 1 <= spec["replicas"] <= aggregator_partitions
    # A surge pod beyond the partitions would get none, stay unready and stall the rollout.
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert not find(build.objects, "HorizontalPodAutoscaler", "aggregator")


def test_alerts_runs_a_standby_and_keeps_one_through_disruptions(build: Build) -> None:
    spec = deployment(build, "alerts")["spec"]
    assert spec["replicas"] >= 2, "one leads (advisory lock), one stands by"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(build.objects, "PodDisruptionBudget", "alerts")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["minAvailable"] < spec["replicas"], "a drain can still proceed"


@pytest.mark.parametrize("service", SERVICES)
def test_each_deployment_has_a_budget_for_its_own_pods(build: Build, service: str) -> None:
    pod_labels = deployment(build, service)["spec"]["template"]["metadata"]["labels"]
    budgets = [
        pdb
        for pdb in find(build.objects, "PodDisruptionBudget")
        if matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    ]
    assert [b["metadata"]["name"] for b in budgets] == [service]
    assert budgets[0]["spec"]["selector"]["matchLabels"][COMPONENT] == service


# --- resources, security, shutdown --------------------------------------------------------


def test_every_container_requests_cpu_and_memory_and_caps_memory(build: Build) -> None:
    for where, spec in pod_specs(build):
        for container in all_containers(spec):
            name = f"{where}: {container['name']}"
            resources = container.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            assert {"cpu", "memory"} <= set(requests), f"{name} requests"
            assert "memory" in limits, f"{name}: a leak must end in an OOM kill, not a node's"
            assert quantity(requests["memory"]) <= quantity(limits["memory"]), name
            if "cpu" in limits:
                assert quantity(requests["cpu"]) <= quantity(limits["cpu"]), name


def test_pods_meet_the_restricted_pod_security_standard(build: Build) -> None:
    namespace = one(build.objects, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user, "the Dockerfile runs as a numeric user"
    for where, spec in pod_specs(build):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user[1]), int(user[2])), where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] == "pacekeeper", where
        # A Service named pacekeeper-ingest would inject PACEKEEPER_INGEST_PORT=tcp://...
        assert spec["enableServiceLinks"] is False, where
        assert "hostNetwork" not in spec, where
        assert "hostPID" not in spec, where
        for container in all_containers(spec):
            name = f"{where}: {container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert not context.get("privileged"), name


def test_mounts_exist_and_tmp_is_writable(build: Build) -> None:
    config_maps = {o["metadata"]["name"] for o in find(build.objects, "ConfigMap")}
    for where, spec in pod_specs(build):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, where
        for container in all_containers(spec):
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            for mount in mounts.values():
                assert mount["name"] in volumes, f"{where}: {container['name']}"
            # Read-only root: tempfile (ingest's multi-worker metrics) needs /tmp.
            assert "/tmp" in mounts, f"{where}: {container['name']}"
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], where


@pytest.mark.parametrize("service", SERVICES)
def test_grace_period_outlasts_the_services_own_shutdown(
    build: Build, service: str, clean_environ: None
) -> None:
    spec = deployment(build, service)["spec"]["template"]["spec"]
    container = main_container(build, service)
    settings = settings_for(SETTINGS[service], with_real_secrets(effective_env(build, container)))
    shutdown = getattr(settings, SHUTDOWN_FIELDS[service])
    pre_stop = 0
    if "lifecycle" in container:
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", "only a sleep: endpoints are removed meanwhile"
        pre_stop = int(command[1])
    required = pre_stop + shutdown + SHUTDOWN_MARGIN_SECONDS
    assert spec["terminationGracePeriodSeconds"] >= required, (
        f"{service}: SIGKILL before its {shutdown} s shutdown could finish"
    )


@pytest.mark.parametrize("service", ["ingest", "alerts"])
def test_api_pods_wait_for_endpoint_removal_before_stopping(build: Build, service: str) -> None:
    command = main_container(build, service)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert int(command[1]) >= 3


# --- migrations ---------------------------------------------------------------------------


def load_wait_script() -> dict[str, Any]:
    """deploy/k8s/wait_for_schema.py as a namespace (exec, so no __pycache__ lands in
    deploy/k8s)."""
    path = K8S / "wait_for_schema.py"
    namespace: dict[str, Any] = {"__name__": "wait_for_schema", "__file__": str(path)}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return namespace


def test_migrations_run_once_in_a_job_that_the_services_wait_for(build: Build) -> None:
    job = one(build.objects, "Job", "migrate")["spec"]
    assert job["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    assert job["backoffLimit"] >= 1, "the database may come up after the Job"
    script = one(build.objects, "ConfigMap", "pacekeeper-wait-for-schema")["data"]
    for service in SERVICES:
        spec = deployment(build, service)["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        assert init["name"] == "wait-for-schema"
        (mount,) = [m for m in init["volumeMounts"] if m["name"] == "wait-for-schema"]
        volume = next(v for v in spec["volumes"] if v["name"] == "wait-for-schema")
        assert volume["configMap"]["name"] == "pacekeeper-wait-for-schema"
        program = init["command"][1]
        assert init["command"][0] == "python"
        assert Path(program).parent == Path(mount["mountPath"])
        assert Path(program).name in script, f"{service} runs a file the ConfigMap lacks"


def test_the_wait_knows_this_image_s_migrations() -> None:
    wait = load_wait_script()
    heads, known = wait["image_revisions"]()
    assert heads == set(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert heads <= known
    verdict = wait["verdict"]
    assert verdict(heads, heads, known) is None
    assert "no revision" in verdict(set(), heads, known)
    older = known - heads
    assert older, "more than one migration"
    assert verdict({min(older)}, heads, known) is not None
    # A revision this image does not know is newer: start, as during a rolling upgrade.
    assert verdict({"from-a-newer-image"}, heads, known) is None


# --- optional parts: KEDA and Strimzi (CRDs, so no schema here: checked by structure) ------


def test_keda_component_scales_the_aggregator_on_its_own_lag(clean_environ: None) -> None:
    (component,) = load_yaml_documents(KEDA / "kustomization.yaml")
    assert component["kind"] == "Component"
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    objects = [d for r in component["resources"] for d in load_yaml_documents(KEDA / r)]
    (scaled,) = objects
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert scaled["metadata"]["namespace"] == NAMESPACE
    spec = scaled["spec"]
    base = kustomize(K8S)
    target = spec["scaleTargetRef"]
    assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment")) == (
        "apps/v1",
        "Deployment",
    )
    assert target["name"] == "aggregator"
    deployment(base, target["name"])
    _, aggregator_partitions = partitions(base, "aggregator")
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= aggregator_partitions
    # Offsets live in the database, never in Kafka: KEDA's kafka scaler would read nothing.
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert "pacekeeper_aggregator_consumer_lag" in query
    assert f'topic="{EVENTS_TOPIC}"' in query
    metrics = (ROOT / "services" / "aggregator" / "metrics.py").read_text(encoding="utf-8")
    assert '"pacekeeper_aggregator_consumer_lag"' in metrics
    assert int(trigger["metadata"]["threshold"]) > 0
    # KEDA's autoscaler owns the count once the component is in.
    (patch,) = component["patches"]
    assert patch["target"]["kind"] == "Deployment"
    assert patch["target"]["name"] == "aggregator"
    assert yaml.safe_load(patch["patch"]) == [{"op": "remove", "path": "/spec/replicas"}]


def test_strimzi_topics_match_the_settings(build: Build, clean_environ: None) -> None:
    topics = {t["spec"]["topicName"]: t for t in load_yaml_documents(KAFKA_TOPICS)}
    assert set(topics) == {EVENTS_TOPIC, KPI_UPDATES_TOPIC, DLQ_TOPIC}
    config = one(build.objects, "ConfigMap", "pacekeeper-config")["data"]
    host = config["PACEKEEPER_KAFKA_BOOTSTRAP"].split(":")[0]
    cluster = host.split(".")[0].removesuffix("-kafka-bootstrap")
    ingest_partitions, aggregator_partitions = partitions(build, "aggregator")
    for topic in topics.values():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["kind"] == "KafkaTopic"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        spec = topic["spec"]
        # acks=all: a write survives a broker loss only with two in-sync copies.
        assert spec["replicas"] >= 3
        assert 2 <= spec["config"]["min.insync.replicas"] < spec["replicas"]
    # As the services would create them (services/*: ensure_topics).
    assert topics[EVENTS_TOPIC]["spec"]["partitions"] == ingest_partitions
    assert topics[EVENTS_TOPIC]["spec"]["partitions"] == aggregator_partitions
    assert topics[KPI_UPDATES_TOPIC]["spec"]["partitions"] == aggregator_partitions
    assert topics[DLQ_TOPIC]["spec"]["partitions"] == 1
    assert deployment(build, "aggregator")["spec"]["replicas"] <= aggregator_partitions


# --- a real kustomize, where installed ------------------------------------------------------


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl installed")


def real_build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*kustomize_command(), str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_HASH = re.compile(r"-[a-z0-9]{10}$")


def test_kustomize_builds_the_same_objects(build: Build, kustomization: dict[str, Any]) -> None:
    built = real_build(K8S)
    generated_names = {
        spec["name"]
        for key in ("configMapGenerator", "secretGenerator")
        for spec in kustomization[key]
    }

    def base_name(obj: dict[str, Any]) -> str:
        name: str = obj["metadata"]["name"]
        stripped = _HASH.sub("", name)
        return stripped if stripped in generated_names else name

    assert {(o["kind"], base_name(o)) for o in built} == {
        (o["kind"], o["metadata"]["name"]) for o in build.objects
    }
    (image,) = kustomization["images"]
    for obj in built:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pacekeeper"
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)
        if obj["kind"] in {"Deployment", "Job"}:
            for container in all_containers(obj["spec"]["template"]["spec"]):
                assert container["image"] == f"{IMAGE}:{image['newTag']}"


def test_an_overlay_sets_image_config_and_secret_and_adds_keda(tmp_path: Path) -> None:
    """What docs/deploy.md tells an operator to write."""
    base = os.path.relpath(K8S, tmp_path)
    (tmp_path / "secrets.env").write_text(
        "PACEKEEPER_DATABASE_URL=postgresql+psycopg://pacekeeper:s3cret@db:5432/pacekeeper\n"
        "PACEKEEPER_ADMIN_TOKEN=an-operator-token\n",
        encoding="utf-8",
    )
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "components": [f"{base}/components/keda"],
        "images": [{"name": IMAGE, "newName": "registry.internal/pacekeeper", "newTag": "9.9"}],
        "configMapGenerator": [
            {
                "name": "pacekeeper-config",
                "behavior": "merge",
                "literals": ["PACEKEEPER_TIMEZONE=Europe/Berlin"],
            }
        ],
        "secretGenerator": [
            {"name": "pacekeeper-secrets", "behavior": "replace", "envs": ["secrets.env"]}
        ],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay), encoding="utf-8")
    built = real_build(tmp_path)
    (secret,) = find(built, "Secret")
    assert decoded(secret)["PACEKEEPER_ADMIN_TOKEN"] == "an-operator-token"
    (config,) = [c for c in find(built, "ConfigMap") if "PACEKEEPER_TIMEZONE" in c["data"]]
    assert config["data"]["PACEKEEPER_TIMEZONE"] == "Europe/Berlin"
    assert config["data"]["PACEKEEPER_ENVIRONMENT"] == "production", "merged, not replaced"
    for obj in [*find(built, "Deployment"), *find(built, "Job")]:
        for container in all_containers(obj["spec"]["template"]["spec"]):
            assert container["image"] == "registry.internal/pacekeeper:9.9"
            refs = {next(iter(s.values()))["name"] for s in container["envFrom"]}
            assert refs == {config["metadata"]["name"], secret["metadata"]["name"]}
    assert "replicas" not in one(built, "Deployment", "aggregator")["spec"]
    (scaled,) = find(built, "ScaledObject")
    assert scaled["metadata"]["namespace"] == NAMESPACE

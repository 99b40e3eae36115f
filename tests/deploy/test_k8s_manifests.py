"""deploy/k8s: every rendered object is valid against the Kubernetes schemas, and the settings
that have to agree with the server, the trainer and the image do.

The overlays are rendered with `kubectl kustomize` (k8s_support); the schemas are those
kubernetes-validate ships (offline), in strict mode (an unknown field is an error)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
from k8s_support import K8S, OLDEST_K8S, OVERLAYS, ROOT, env_of, load_file, one, pod_spec, render
from kubernetes_validate.utils import latest_version

from recsys_server import app as server_app
from recsys_server import config as server_config
from recsys_server.service import SERVICE_NAME
from recsys_server.store_watch import STORE_SERVICE
from recsys_trainer import cli as trainer_cli

VERSIONS = (OLDEST_K8S, latest_version())
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def server_container(objects: list[dict]) -> dict:
    return pod_spec(one(objects, "Deployment", "recsys-server"))["containers"][0]


def config_toml(objects: list[dict]) -> str:
    cms = [o for o in objects if o["kind"] == "ConfigMap"]
    assert len(cms) == 1 and cms[0]["metadata"]["name"].startswith("recsys-server-config")
    return cms[0]["data"]["server.toml"]


def server_config_of(objects: list[dict], tmp_path: Path) -> server_config.ServerConfig:
    """The ConfigMap's TOML read by the server's own loader (no token variables)."""
    path = tmp_path / "server.toml"
    path.write_text(config_toml(objects))
    return server_config.load(path, env={})


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_against_the_schemas(rendered, version):
    overlay, objects = rendered
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "CronJob",
    } <= kinds
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(
                f"{overlay}: {obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes "
                f"{version}: {e.message} at {'/'.join(map(str, e.path))}"
            ) from None


@pytest.mark.parametrize("version", VERSIONS)
def test_the_example_secret_is_valid_and_holds_every_key_the_pods_read(version):
    (secret,) = load_file(K8S / "base" / "secret.example.yaml")
    kubernetes_validate.validate(secret, version, strict=True)
    objects = render("production")
    refs = []
    for kind, name in (("Deployment", "recsys-server"), ("CronJob", "recsys-refresh")):
        for container in pod_spec(one(objects, kind, name))["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] == secret["metadata"]["name"]
                    refs.append((ref["key"], ref.get("optional", False)))
    required = {key for key, optional in refs if not optional}
    assert required == {"store-url", "write-token", "admin-token"}
    assert required <= set(secret["stringData"])
    assert secret["stringData"]["store-url"].startswith("postgresql://")


def test_the_config_map_is_a_valid_server_config_that_matches_the_pod(rendered, tmp_path):
    _, objects = rendered
    cfg = server_config_of(objects, tmp_path)
    container = server_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert cfg.host == "0.0.0.0"  # reachable from the kubelet's probes and the Services
    assert ports == {"grpc": cfg.port, "metrics": cfg.metrics_port}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert cfg.artifacts is not None
    assert cfg.artifacts.is_relative_to(mounts["data"]["mountPath"])
    args = server_app.build_parser().parse_args(container["args"])
    assert args.config == Path(mounts["config"]["mountPath"]) / "server.toml"
    # The DSN reaches the server from the Secret as RECSYS_STORE_URL, off the command line.
    assert args.store is None
    assert "secretKeyRef" in env_of(container)[server_config.STORE_ENV]["valueFrom"]
    # The token variables the server reads, each from the Secret.
    env = env_of(container)
    for var in server_config.TOKEN_ENV.values():
        assert "secretKeyRef" in env[var]["valueFrom"], var
    pod = pod_spec(one(objects, "Deployment", "recsys-server"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]


def test_probes_use_the_grpc_health_service_names_the_server_sets(rendered):
    _, objects = rendered
    container = server_container(objects)
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}
        assert container[probe]["grpc"]["port"] == grpc_port
    # Readiness: the Recommender service (SERVING once a model is loaded, NOT_SERVING from
    # SIGTERM on). Startup and liveness: the server overall (""). Never the data store's.
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    assert container["startupProbe"]["grpc"].get("service", "") == ""
    assert container["livenessProbe"]["grpc"].get("service", "") == ""
    assert STORE_SERVICE not in {
        container[p]["grpc"].get("service") for p in container if "Probe" in p
    }


def test_termination_grace_covers_pre_stop_and_the_servers_grace(rendered, tmp_path):
    _, objects = rendered
    cfg = server_config_of(objects, tmp_path)
    pod = pod_spec(one(objects, "Deployment", "recsys-server"))
    container = pod["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    budget = pod["terminationGracePeriodSeconds"]
    assert budget >= server_config.ServerConfig().grace_seconds
    # The kubelet's clock runs from the start of preStop; the server's from SIGTERM after it.
    assert budget >= pre_stop + cfg.grace_seconds + 5, (budget, pre_stop, cfg.grace_seconds)
    assert cfg.drain_seconds <= cfg.grace_seconds


def test_pods_run_as_non_root_without_privileges(rendered):
    _, objects = rendered
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.M)
    assert dockerfile_user is not None
    for kind, name in (("Deployment", "recsys-server"), ("CronJob", "recsys-refresh")):
        pod = pod_spec(one(objects, kind, name))
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == int(dockerfile_user.group(1)) != 0
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False
            assert csc["readOnlyRootFilesystem"] is True
            assert csc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"]


def test_services_select_the_server_pods_and_one_is_headless(rendered):
    _, objects = rendered
    deployment = one(objects, "Deployment", "recsys-server")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless = one(objects, "Service", "recsys-headless")
    assert headless["spec"]["clusterIP"] == "None"
    for svc in (headless, one(objects, "Service", "recsys")):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {"name": "grpc", "port": 50051, "targetPort": "grpc"}.items() <= next(
            p for p in svc["spec"]["ports"] if p["name"] == "grpc"
        ).items()
    pdb = one(objects, "PodDisruptionBudget", "recsys-server")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_the_autoscaler_owns_the_replica_count(rendered):
    overlay, objects = rendered
    deployment = one(objects, "Deployment", "recsys-server")
    assert "replicas" not in deployment["spec"]  # an apply must not undo the autoscaler
    hpa = one(objects, "HorizontalPodAutoscaler", "recsys-server")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "recsys-server",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    expected = {"dev": (1, 2), "production": (3, 10)}[overlay]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == expected


def test_refresh_publishes_where_the_servers_read(rendered, tmp_path):
    _, objects = rendered
    cfg = server_config_of(objects, tmp_path)
    cron = one(objects, "CronJob", "recsys-refresh")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = pod_spec(cron)
    (container,) = pod["containers"]
    assert container["command"] == ["recsys-train"]
    # --store comes from RECSYS_STORE_URL (the Secret's DSN), as the kubelet sets it.
    assert "secretKeyRef" in env_of(container)[server_config.STORE_ENV]["valueFrom"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv(server_config.STORE_ENV, "postgresql://recsys@db/recsys")
        args = trainer_cli.build_parser().parse_args(container["args"])
    assert args.command == "refresh"
    assert Path(args.out) == cfg.artifacts
    assert args.store == "postgresql://recsys@db/recsys"
    claim = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    server_pod = pod_spec(one(objects, "Deployment", "recsys-server"))
    server_claim = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in server_pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claim == server_claim == {"data": "recsys-data"}
    pvc = one(objects, "PersistentVolumeClaim", "recsys-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    writable = {m["name"]: not m.get("readOnly", False) for m in container["volumeMounts"]}
    assert writable["data"]
    server_mounts = {
        m["name"]: m.get("readOnly", False) for m in server_pod["containers"][0]["volumeMounts"]
    }
    assert server_mounts["data"] is True


def test_every_object_lands_in_the_overlays_namespace(rendered):
    overlay, objects = rendered
    namespace = {"dev": "recsys-dev", "production": "recsys"}[overlay]
    assert one(objects, "Namespace")["metadata"]["name"] == namespace
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]


def test_the_base_config_file_is_the_config_maps(rendered):
    _, objects = rendered
    text = (K8S / "base" / "server.toml").read_text()
    assert config_toml(objects) == text
    assert tomllib.loads(text)["artifacts"].startswith("/var/lib/recsys/")


def test_the_dockerfile_takes_its_bases_as_arguments_and_runs_the_server():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BUILDER_IMAGE=\S+$", text, re.M)
    assert re.search(r"^ARG RUNTIME_IMAGE=\S+$", text, re.M)
    assert re.search(r"^FROM \$\{BUILDER_IMAGE\} AS build$", text, re.M)
    assert re.search(r"^FROM \$\{RUNTIME_IMAGE\} AS runtime$", text, re.M)
    assert 'ENTRYPOINT ["recsys-serve"]' in text
    objects = render("production")
    for kind, name in (("Deployment", "recsys-server"), ("CronJob", "recsys-refresh")):
        image = pod_spec(one(objects, kind, name))["containers"][0]["image"]
        assert image.split(":")[0] == "recsys-engine", image

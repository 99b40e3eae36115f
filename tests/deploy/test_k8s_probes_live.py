"""The Deployment's probes against a real `recsys-serve` started from the ConfigMap's
configuration: each probe's gRPC health service answers SERVING once a model is loaded, the
readiness service turns NOT_SERVING on SIGTERM, and the process exits within the pod's
termination budget (what is left of it after preStop; the kubelet sends SIGKILL after)."""

from __future__ import annotations

import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from k8s_support import K8S, one, pod_spec, render
from srv_support import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING


def check(stub, service: str) -> int | None:
    """What the kubelet's grpc probe sees: the status, or None when the call fails."""
    try:
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
    except grpc.RpcError:
        return None


def test_probe_services_answer_serving_and_shutdown_fits_the_pods_budget(trained, tmp_path):
    pod = pod_spec(one(render("production"), "Deployment", "recsys-server"))
    container = pod["containers"][0]
    probes = {p: container[p]["grpc"].get("service", "") for p in container if p.endswith("Probe")}
    assert set(probes) == {"startupProbe", "readinessProbe", "livenessProbe"}
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    left_after_pre_stop = pod["terminationGracePeriodSeconds"] - pre_stop

    # The ConfigMap's file as the pod reads it; the flags only move it onto loopback and this
    # test's artifacts and store (flags win over the file, as in the cluster's --store).
    srv = ServerProcess(
        "--config",
        str(K8S / "base" / "server.toml"),
        "--host",
        "127.0.0.1",
        "--artifacts",
        str(trained),
        "--store",
        f"sqlite:///{tmp_path / 'events.db'}",
    ).start()
    channel = grpc.insecure_channel(srv.address)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        srv.wait_serving()
        for probe, service in probes.items():
            assert check(stub, service) == SERVING, (probe, service)

        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        readiness = probes["readinessProbe"]
        deadline = time.monotonic() + 10
        while check(stub, readiness) == SERVING:
            assert time.monotonic() < deadline, "readiness still SERVING 10 s after SIGTERM"
            time.sleep(0.02)
        srv.proc.communicate(timeout=left_after_pre_stop)  # TimeoutExpired: SIGKILL in k8s
        assert srv.proc.returncode == 0, srv.stderr
    finally:
        channel.close()
        srv.kill()

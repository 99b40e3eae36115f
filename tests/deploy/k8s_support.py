"""Rendering the Kustomize overlays of deploy/k8s and finding objects in them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes the manifests are for (native gRPC probes are GA since 1.27) and the
# newest kubernetes-validate ships schemas of; both are checked.
OLDEST_K8S = "1.27"


def kustomize_command() -> list[str]:
    """`kubectl kustomize` (built into kubectl since 1.14) or a standalone `kustomize build`.
    AssertionError naming what is missing otherwise: the overlays cannot be validated
    without rendering them, so the tests fail rather than skip."""
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    raise AssertionError(
        "cannot render deploy/k8s: neither kubectl (its `kubectl kustomize`) nor kustomize is "
        "on PATH; install kubectl >= 1.27 (e.g. from the Kubernetes apt repository "
        "pkgs.k8s.io; Debian 12's kubernetes-client 1.20 is too old for these kustomizations)"
    )


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k deploy/k8s/overlays/<overlay>` would send."""
    out = subprocess.run(
        [*kustomize_command(), str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kustomize {overlay} failed: {out.stderr.strip()}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def load_file(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}

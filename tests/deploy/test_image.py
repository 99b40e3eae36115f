"""The container image builds (deploy/docker/build.sh) and runs: recsys-serve is its
entrypoint, it runs as the non-root user the pods expect, and the abi3 extension works with the
image's Python. Marker ``image``: deselected unless asked for (``bash .ci/image``, or
``pytest -m image tests/deploy``). Where the image cannot be built the test fails with
build.sh's reason (docs/deploy.md, "The image", says what building needs)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from srv_support import LISTENING
from test_abi3_wheel import CHECK

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "docker" / "build.sh"
TAG = "recsys-engine:test"
UID = 10001


def run_in(engine: str, *command: str) -> str:
    """``command`` in a fresh container of the image, as the image's own user."""
    if engine == "docker":
        cmd = ["docker", "run", "--rm", "--entrypoint", command[0], TAG, *command[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    else:
        ctr = subprocess.run(
            ["buildah", "from", "--pull=never", TAG], capture_output=True, text=True, check=True
        ).stdout.strip()
        try:
            out = subprocess.run(
                ["buildah", "run", "--isolation", "chroot", ctr, "--", *command],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        finally:
            subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
    assert out.returncode == 0, f"{command} in {TAG}: {out.stderr[-2000:]}"
    return out.stdout


def in_container(mark: str) -> list[psutil.Process]:
    """The processes with ``RECSYS_TEST_MARK=mark`` in their environment (chroot isolation:
    they are not buildah run's children, buildah-chroot-exec detaches)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("RECSYS_TEST_MARK") == mark:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def serve_in_image(artifacts: Path, state: Path) -> None:
    """recsys-serve in a buildah container (chroot isolation: the host's network, so a
    loopback port) on ``artifacts``; its gRPC health answers SERVING."""
    ctr = subprocess.run(
        ["buildah", "from", "--pull=never", TAG], capture_output=True, text=True, check=True
    ).stdout.strip()
    mark = uuid.uuid4().hex
    cmd = [
        "buildah", "run", "--isolation", "chroot",
        "-v", f"{artifacts}:/var/lib/recsys/artifacts:ro",
        "-v", f"{state}:/var/lib/recsys/state",
        ctr, "--",
        "env", f"RECSYS_TEST_MARK={mark}",
        "recsys-serve", "--artifacts", "/var/lib/recsys/artifacts", "--host", "127.0.0.1",
        "--port", "0", "--metrics-port", "0",
        "--store", "sqlite:////var/lib/recsys/state/events.db",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if m := LISTENING.search(line):
                address = m.group(1)
                break
        assert address, "recsys-serve in the image never listened"
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while True:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                assert time.monotonic() < deadline, f"not SERVING after 120 s: {status}"
                time.sleep(0.2)
        # SIGTERM to the server itself (buildah run answers its own SIGTERM by killing the
        # child): the graceful shutdown, exit 0, as when the kubelet stops the pod.
        (server,) = in_container(mark)
        assert server.uids().real == UID
        server.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            for left in in_container(mark):  # killing buildah run alone would orphan them
                left.kill()
            proc.kill()
            proc.wait(30)
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)


@pytest.mark.image
def test_the_image_builds_and_serves_as_a_non_root_user(trained, tmp_path):
    build = subprocess.run(
        ["bash", str(BUILD), "--tag", TAG],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if build.returncode != 0:
        reason = [line for line in build.stderr.splitlines() if "CANNOT BUILD" in line]
        pytest.fail(
            reason[-1] if reason else f"build.sh failed: {build.stderr[-3000:]}", pytrace=False
        )
    engine = re.search(r"\[image\] engine: (\w+)", build.stderr)
    assert engine is not None, build.stderr
    engine_name = engine.group(1)

    assert "usage: recsys-serve" in run_in(engine_name, "recsys-serve", "--help")
    assert "usage: recsys-train" in run_in(engine_name, "recsys-train", "--help")
    assert run_in(engine_name, "id", "-u").strip() == str(UID)
    got = json.loads(run_in(engine_name, "python3", "-c", CHECK))
    assert tuple(got["version"]) >= (3, 11)
    assert got["package"].startswith("/opt/recsys/"), got["package"]
    assert got["native"].endswith("_native.abi3.so"), got["native"]
    assert got["dense"] == [[2, 0], [1.5, 1.0]]

    if engine_name == "buildah":
        # The image's user (uid 10001) reads the artifacts and writes the store.
        artifacts, state = tmp_path / "artifacts", tmp_path / "state"
        shutil.copytree(trained, artifacts)
        state.mkdir()
        for p in (tmp_path, artifacts, *artifacts.rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
        state.chmod(0o777)
        serve_in_image(artifacts, state)

"""A real two-node Ray cluster on this machine for the engine tests: ``ray start --head``
and ``ray start --address``, one CPU each, every port chosen free and every file under a
temporary directory of its own, so it never meets another Ray on the machine. Each node runs
as ``ray start --block`` in its own process group; stopping kills those groups, which takes
every raylet, object store and worker down with them (no machine-wide ``ray stop``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


WORKER_PORTS = 41
"""Ports in each node's worker range."""


def worker_port_ranges(n: int, seed: int) -> list[int]:
    """The first port of ``n`` disjoint ranges of ``WORKER_PORTS`` free ports, below the
    kernel's ephemeral range: ``free_ports`` (and every other test's free port) is taken from
    that range, so a worker range inside it could be handed to another component (Ray then
    refuses to start: "worker_ports is trying to use a port number ... used by other
    components"). ``seed`` spreads concurrent clusters apart; each range is checked free."""
    low = _ephemeral_low()
    first, span = 10000, (low - 10000) // WORKER_PORTS
    out: list[int] = []
    for step in range(span):
        lo = first + ((seed + step) % span) * WORKER_PORTS
        if lo + WORKER_PORTS <= low and all(_port_free(p) for p in range(lo, lo + WORKER_PORTS)):
            out.append(lo)
            if len(out) == n:
                return out
    raise RuntimeError(f"no {n} free ranges of {WORKER_PORTS} ports below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _node_args(temp: Path, ports: list[int], store: int) -> list[str]:
    names = (
        "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
    )  # fmt: skip
    args = [f"{name}={port}" for name, port in zip(names, ports, strict=False)]
    lo = ports[-1]
    return [
        "--num-cpus=1",
        "--block",
        f"--temp-dir={temp}",
        f"--object-store-memory={store}",
        "--disable-usage-stats",
        f"--min-worker-port={lo}",
        f"--max-worker-port={lo + WORKER_PORTS - 1}",
        *args,
    ]


def _wait_for_nodes(
    address: str, n: int, env: dict, procs: list[subprocess.Popen], logs: list[Path],
    timeout: float = 120.0,
) -> None:  # fmt: skip
    """Until ``n`` nodes are alive. Fails at once, with the node's log, when a node process
    has exited (``ray.init`` would otherwise wait forever on a head that never started), and
    bounds each probe."""
    probe = (
        "import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(sum(1 for x in ray.nodes() if x['Alive']))"
    )
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(
                    f"ray start exited ({p.returncode}) before the cluster was up:\n{tail}"
                )
        try:
            out = subprocess.run(
                [sys.executable, "-c", probe, address], env=env, capture_output=True,
                text=True, timeout=max(deadline - time.monotonic(), 1.0),
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            why = "the probe's ray.init did not return"
            continue
        if out.returncode == 0 and out.stdout.strip().endswith(str(n)):
            return
        why = out.stderr
        time.sleep(1.0)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {n} nodes: {why}")


@dataclass
class Cluster:
    address: str
    """The head's ``127.0.0.1:PORT``, for ``ray.init(address=...)``."""
    groups: list[int]
    """Process groups of the two nodes: every Ray process of this cluster is in one."""


@contextmanager
def two_node_cluster(object_store_bytes: int = 200_000_000):
    """Yields a running two-node `Cluster`; each node's object store holds
    ``object_store_bytes`` (more spills to its temp dir)."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=os.pathsep.join(sys.path))
    gcs, client, *rest = free_ports(14)
    head_ports, node_ports = rest[:6], rest[6:12]
    head_lo, node_lo = worker_port_ranges(2, seed=gcs)
    head_ports.append(head_lo)
    node_ports.append(node_lo)
    procs = []
    try:
        head = [
            str(RAY), "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1",
            f"--ray-client-server-port={client}", "--include-dashboard=false",
            *_node_args(root / "head", head_ports, object_store_bytes),
        ]  # fmt: skip
        logs = [root / "head.log", root / "node.log"]
        procs.append(_spawn(head, env, logs[0]))
        address = f"127.0.0.1:{gcs}"
        _wait_for_nodes(address, 1, env, procs, logs[:1])
        node = [
            str(RAY), "start", f"--address={address}", "--node-ip-address=127.0.0.1",
            *_node_args(root / "node", node_ports, object_store_bytes),
        ]  # fmt: skip
        procs.append(_spawn(node, env, logs[1]))
        _wait_for_nodes(address, 2, env, procs, logs)
        yield Cluster(address, [p.pid for p in procs])
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(root, ignore_errors=True)


def _spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        return subprocess.Popen(
            cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(p: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            # the group may outlive its leader for a moment
            time.sleep(1.0)
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue

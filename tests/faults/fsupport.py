"""Helpers for the fault suite: mode (short / long), artifacts, the load generator process,
resident memory, a health prober and the figures each scenario reports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "server" / "tests"))

from srv_support import ServerProcess, metric, republish, scrape  # noqa: E402

from recsys_proto.v1 import recommender_pb2 as pb  # noqa: E402

LONG = os.environ.get("RECSYS_FAULTS_LONG", "") not in ("", "0")
LOADGEN = Path(__file__).with_name("loadgen.py")
__all__ = ["ServerProcess", "metric", "republish", "scrape"]


def events(prefix: str, n: int, start: int = 0) -> list:
    """``n`` view events with ids ``prefix-start`` .. ``prefix-(start+n-1)`` (users u000-u599)."""
    return [
        pb.Interaction(
            event_id=f"{prefix}-{i}", user_id=f"u{i % 600:03d}", item_id="i001", event_type="view"
        )
        for i in range(start, start + n)
    ]


def users(n: int = 200) -> str:
    return ",".join(f"u{i:03d}" for i in range(1, n + 1))


def loadgen(target: str, out: Path, *, rate=200.0, duration=10.0, method="recommend", **kw):
    """Starts loadgen.py in its own process (keyword ``health_check`` -> ``--health-check``);
    ``.wait()`` it, then `calls(out)`."""
    args = [sys.executable, str(LOADGEN), "--target", target, "--out", str(out)]
    args += ["--rate", str(rate), "--duration", str(duration), "--method", method]
    kw.setdefault("users", users())
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(args, stderr=subprocess.DEVNULL)


def calls(*paths: Path) -> list[list]:
    out: list[list] = []
    for p in paths:
        out += json.loads(Path(p).read_text())
    return sorted(out)


def pct(values, q: float) -> float:
    v = sorted(values)
    if not v:
        return 0.0
    return v[min(len(v) - 1, int(q * len(v)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def metric_value(url: str, name: str, **labels: str) -> float:
    return metric(scrape(url), name, **labels) or 0.0


class HealthProbe(threading.Thread):
    """Health Check every ``every`` s: [(wall time, seconds, status name or error code)]."""

    def __init__(self, address: str, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(address)
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.every = every
        self.samples: list[tuple[float, float, str]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.perf_counter()
            wall = time.time()
            try:
                r = self.stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                got = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            except grpc.RpcError as e:
                got = e.code().name
            self.samples.append((wall, time.perf_counter() - t0, got))
            self._halt.wait(self.every)

    def stop(self) -> list[tuple[float, float, str]]:
        self._halt.set()
        self.join(10)
        self.channel.close()
        return self.samples


def report(name: str, figures: dict) -> None:
    """Prints a scenario's figures; with RECSYS_FAULTS_RESULTS=DIR also writes DIR/name.json
    (docs/reliability.md is written from those)."""
    figures = {"mode": "long" if LONG else "short", **figures}
    print(f"\n[faults] {name}: {json.dumps(figures)}")
    out = os.environ.get("RECSYS_FAULTS_RESULTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


def summary(cs: list[list]) -> dict:
    ok = [c[1] for c in cs if c[2] == "OK"]
    codes: dict[str, int] = {}
    for c in cs:
        codes[c[2]] = codes.get(c[2], 0) + 1
    span = (cs[-1][0] - cs[0][0]) if len(cs) > 1 else 1.0
    return {
        "calls": len(cs),
        "rate": round(len(cs) / max(span, 1e-9), 1),
        "codes": codes,
        "ok_p50_ms": round(pct(ok, 0.50) * 1e3, 2),
        "ok_p99_ms": round(pct(ok, 0.99) * 1e3, 2),
        "ok_max_ms": round(max(ok, default=0) * 1e3, 2),
    }


NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "recsys-grpc.conf.template"


class NginxFront:
    """nginx from Debian's package in front of a server, with deploy/nginx's config (the three
    variables substituted, as envsubst would), in its own prefix directory."""

    def __init__(self, upstream: str, workdir: Path, max_inflight: int = 32) -> None:
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(self.nginx).exists():
            raise RuntimeError("nginx is missing: run .ci/system-deps (Debian's nginx-light)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{s.getsockname()[1]}"
        snippet = NGINX_TEMPLATE.read_text()
        for var, value in (
            ("RECSYS_LISTEN", self.address),
            ("RECSYS_UPSTREAM", upstream),
            ("RECSYS_MAX_INFLIGHT", str(max_inflight)),
        ):
            snippet = snippet.replace("${" + var + "}", value)
        (self.dir / "recsys-grpc.conf").write_text(snippet)
        (self.dir / "nginx.conf").write_text(
            f"worker_processes 1;\npid {self.dir}/nginx.pid;\n"
            f"error_log {self.dir}/error.log warn;\n"
            "events { worker_connections 8192; }\n"
            f"http {{\n    client_body_temp_path {self.dir}/body;\n"
            f"    include {self.dir}/recsys-grpc.conf;\n}}\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> NginxFront:
        conf = str(self.dir / "nginx.conf")
        cmd = [self.nginx, "-p", str(self.dir), "-c", conf, "-g", "daemon off;"]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        host, port = self.address.rsplit(":", 1)
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex((host, int(port))) == 0:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

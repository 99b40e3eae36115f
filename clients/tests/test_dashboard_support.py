"""Shared fixtures of the dashboard tests (no tests here): small trained artifacts with the
interactions file they were trained on, and a real server on a free loopback port with an A/B
experiment, reusing the server tests' in-process server (server/tests/srv_support.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "server" / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "server" / "tests"))

from srv_support import InProcessServer, server_config  # noqa: E402

from recsys_server.config import Experiment, Variant  # noqa: E402
from recsys_trainer import cli  # noqa: E402

N_USERS, N_ITEMS, N_EVENTS = 800, 300, 20_000
EXPERIMENT = Experiment(
    "blend",
    (Variant("control", "hybrid", 0.5), Variant("more-svd", "hybrid", 0.5, {"svd": 4.0})),
)
APP = ROOT / "clients" / "recsys_dashboard" / "app.py"
PAGES = {
    "overview": "views/overview.py",
    "users": "views/users.py",
    "lab": "views/lab.py",
    "similar": "views/similar.py",
    "catalogue": "views/catalogue.py",
    "simulate": "views/simulate.py",
    "experiments": "views/experiments.py",
}


@dataclass(frozen=True)
class Trained:
    artifacts: Path
    data: Path


@dataclass(frozen=True)
class Live:
    trained: Trained
    address: str
    metrics_url: str

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "RECSYS_TARGET": self.address,
            "RECSYS_METRICS_URL": self.metrics_url,
            "RECSYS_ARTIFACTS": str(self.trained.artifacts),
        }
        env.update(overrides)
        return env


@pytest.fixture(scope="session")
def dash_trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("dash")
    data = root / "data" / "interactions.tsv"
    data.parent.mkdir()
    sizes = ["--users", str(N_USERS), "--items", str(N_ITEMS), "--interactions", str(N_EVENTS)]
    assert cli.main(["generate", "--out", str(data), *sizes]) == 0
    assert cli.main(["train", "--interactions", str(data), "--out", str(root / "artifacts")]) == 0
    return Trained(root / "artifacts", data)


@pytest.fixture(scope="session")
def live(dash_trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A real recsys server (in this process, on a background event loop)."""
    tmp = tmp_path_factory.mktemp("dash-server")
    config = server_config(dash_trained.artifacts, tmp, experiments=(EXPERIMENT,))
    srv = InProcessServer(config)
    try:
        srv.wait_serving()
        yield Live(dash_trained, srv.address, srv.metrics_url)
    finally:
        srv.stop()


@pytest.fixture
def dash_env(live: Live, monkeypatch: pytest.MonkeyPatch) -> Live:
    """The dashboard's settings pointing at the live server."""
    for key, value in live.env().items():
        monkeypatch.setenv(key, value)
    for key in ("RECSYS_TOKEN", "RECSYS_REPORT", "RECSYS_TLS_ROOT_CERT"):
        monkeypatch.delenv(key, raising=False)
    return live


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(live: Live) -> dict[str, str]:
    env = {**os.environ, **live.env()}
    env.pop("RECSYS_TOKEN", None)
    return env

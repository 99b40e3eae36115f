"""The monitoring config against the real thing: promtool checks the scrape config and the alert
rules (and runs their unit tests); a real Prometheus on loopback scrapes a live `recsys-serve`
under a short load, then every PromQL expression of the Grafana dashboard and of the alert
rules goes through Prometheus's HTTP API: each must parse, the dashboard's must return data.

Prometheus comes from Debian's `prometheus` package (it includes promtool); when it is missing
the test installs it with apt-get (root needed) and fails, saying why, when it cannot.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from srv_support import Client, ServerProcess, event, trained  # noqa: F401 (fixture)

from recsys_core import artifacts
from recsys_proto.v1 import recommender_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
CONFIG, RULES, RULE_TESTS = (
    PROM_DIR / "prometheus.yml",
    PROM_DIR / "alerts.yml",
    PROM_DIR / "alerts_test.yml",
)
# deploy/grafana/dashboard.py, under a name no other module uses.
_spec = importlib.util.spec_from_file_location(
    "recsys_grafana_dashboard", REPO / "deploy" / "grafana" / "dashboard.py"
)
assert _spec is not None and _spec.loader is not None
dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard)

LOAD_SECONDS = 8.0
RATE_WINDOW = "1m"  # what $__rate_interval stands for here: the whole short run
SERVER_CONFIG = """
[[experiments]]
name = "blend"
[[experiments.variants]]
name = "control"
model = "hybrid"
share = 0.5
[[experiments.variants]]
name = "more-svd"
model = "hybrid"
share = 0.5
hybrid_weights = { svd = 2.0 }
"""


# -- Prometheus binaries -----------------------------------------------------------------------


def ensure_prometheus() -> None:
    """Installs Debian's `prometheus` package when prometheus or promtool is missing."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            "prometheus/promtool are not installed and cannot be installed here (needs root and "
            "apt-get): install the Debian package `prometheus`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # another apt may be running: wait for it
    for cmd in (
        ["apt-get", *lock, "update"],
        ["apt-get", *lock, "install", "-y", "--no-install-recommends", "prometheus"],
    ):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if p.returncode != 0:
            pytest.fail(f"{shlex.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        pytest.fail("apt-get installed `prometheus` but prometheus/promtool are not on PATH")


@pytest.fixture(scope="module")
def promtool() -> str:
    ensure_prometheus()
    return shutil.which("promtool") or "promtool"


def run_ok(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{shlex.join(cmd)}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_promtool_checks_config_and_rules(promtool: str) -> None:
    run_ok(promtool, "check", "config", str(CONFIG))
    out = run_ok(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(alert_names())} rules found" in out
    run_ok(promtool, "test", "rules", str(RULE_TESTS))


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(RULES.read_text().replace("> 0.1", "> > 0.1", 1))
    p = subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0 and "parse error" in p.stdout + p.stderr


def test_dashboard_json_is_generated() -> None:
    assert dashboard.OUT.read_text() == dashboard.render(), "run deploy/grafana/dashboard.py"
    d = json.loads(dashboard.OUT.read_text())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in d["panels"])
    for needed in (
        "Request rate by method",
        "p50 / p95 / p99",
        "Errors by code",
        "Model version",
        "Model age",
        "Fallback tiers",
        "A/B variant",
        "Interactions recorded per second",
        "In-flight",
        "Cold-start share",
        "Popularity profile",
        "Catalog coverage",
        "Impressions per second by variant",
        "Outcomes per impression by variant",
        "Dropped impressions",
        "Configuration reloads",
    ):
        assert needed in titles, needed
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "prometheus"
    budget = next(p for p in d["panels"] if "budget" in p["title"])
    steps = budget["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 0.1} in steps  # the 100 ms budget line


# -- a live server scraped by a real Prometheus ------------------------------------------------


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # 400/422: a bad query, with Prometheus's JSON error
        return json.loads(e.read() or b"{}")


def query(base: str, expr: str) -> dict:
    return get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def substitute(expr: str) -> str:
    """The dashboard's Grafana variables, as Grafana would fill them in for this run."""
    return (
        expr.replace("$__rate_interval", RATE_WINDOW)
        .replace("$job", "recsys")
        .replace("$instance", ".*")
    )


def check_queries(base: str, exprs: list[tuple[str, str]], need_data: bool) -> list[str]:
    """Problems with ``(name, expr)``: a query Prometheus rejects, or (``need_data``) one that
    returns nothing."""
    problems = []
    for name, expr in exprs:
        r = query(base, expr)
        if r.get("status") != "success":
            problems.append(f"{name}: {expr!r}: {r.get('errorType')}: {r.get('error')}")
        elif need_data and not r["data"]["result"]:
            problems.append(f"{name}: {expr!r}: no data")
    return problems


def drive_load(address: str, item_ids: list[str], seconds: float) -> dict[str, int]:
    """A few threads of mixed calls (some of them refused) for ``seconds``; returns the number
    of OK Recommend calls."""
    stop = time.monotonic() + seconds
    ok = {"Recommend": 0}
    lock = threading.Lock()

    def worker(n: int) -> None:
        rng = random.Random(n)
        c = Client(address)
        try:
            k = 0
            while time.monotonic() < stop:
                k += 1
                roll = rng.random()
                with contextlib.suppress(grpc.RpcError):
                    if roll < 0.6:
                        c.Recommend(
                            pb.RecommendRequest(
                                user_id=f"u{rng.randrange(600):03d}", k=10, explain=True
                            )
                        )
                        with lock:
                            ok["Recommend"] += 1
                    elif roll < 0.75:
                        recent = rng.sample(item_ids, 2)
                        c.Recommend(
                            pb.RecommendRequest(
                                user_id=f"new-{n}-{k}", k=10, recent_item_ids=recent
                            )
                        )
                        with lock:
                            ok["Recommend"] += 1
                    elif roll < 0.85:
                        c.SimilarItems(pb.SimilarItemsRequest(item_id=rng.choice(item_ids), k=10))
                    elif roll < 0.95:
                        ev = event(f"p-{n}-{k}", f"u{rng.randrange(600):03d}", rng.choice(item_ids))
                        c.RecordInteractions(pb.RecordInteractionsRequest(events=[ev]))
                    elif roll < 0.98:
                        c.SimilarItems(pb.SimilarItemsRequest(item_id="no-such-item", k=10))
                    else:
                        c.Recommend(pb.RecommendRequest(user_id="u000", k=0))  # INVALID_ARGUMENT
                time.sleep(0.002)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok


@pytest.fixture(scope="module")
def live(trained, promtool, tmp_path_factory):  # noqa: F811
    """(Prometheus base URL, OK Recommend calls made) after a short load on a live server."""
    tmp = tmp_path_factory.mktemp("prom")
    cfg = tmp / "server.toml"
    cfg.write_text(SERVER_CONFIG)
    srv = ServerProcess(
        "--artifacts", str(trained), "--store", f"sqlite:///{tmp}/events.db", "--config", str(cfg)
    ).start()
    prom = None
    try:
        srv.wait_serving()
        target = urllib.parse.urlsplit(srv.metrics_url).netloc
        # JSON is YAML: the deployed scrape config with this server and a 1 s interval.
        prom_cfg = tmp / "prometheus.yml"
        prom_cfg.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "recsys",
                            "metrics_path": "/metrics",
                            "static_configs": [
                                {"targets": [target], "labels": {"service": "recsys-serve"}}
                            ],
                        }
                    ],
                }
            )
        )
        run_ok(promtool, "check", "config", str(prom_cfg))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        prom = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "prometheus.log", "w"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            if prom.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not start:\n{(tmp / 'prometheus.log').read_text()}")
            time.sleep(0.2)

        version = artifacts.load_version(trained / artifacts.latest_version(trained))
        # A configuration reload (the same file: unchanged), once Prometheus has the counter
        # at 0, so that its increase is seen.
        reloaded = 'recsys_config_reloads_total{job="recsys", result="unchanged"}'
        deadline = time.monotonic() + 20
        while not query(base, reloaded)["data"]["result"]:
            if time.monotonic() > deadline:
                pytest.fail("Prometheus never scraped the server")
            time.sleep(0.2)
        srv.proc.send_signal(signal.SIGHUP)
        ok = drive_load(srv.address, [str(i) for i in version.item_ids], LOAD_SECONDS)
        # Wait until a scrape after the load has been stored.
        expr = 'sum(recsys_requests_total{job="recsys", method="Recommend", code="OK"})'
        deadline = time.monotonic() + 20
        while True:
            res = query(base, expr)["data"]["result"]
            if res and float(res[0]["value"][1]) == ok["Recommend"]:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus never saw the load: {res} vs {ok}")
            time.sleep(0.5)
        yield base, ok
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(20)
            except subprocess.TimeoutExpired:
                prom.kill()
        srv.terminate()


def test_every_dashboard_query_parses_and_returns_data(live) -> None:
    base, _ = live
    exprs = [(t, substitute(e)) for t, e in dashboard.queries()]
    assert len(exprs) >= 20
    assert check_queries(base, exprs, need_data=True) == []


def test_dashboard_values_match_the_traffic(live) -> None:
    base, ok = live
    d = {t: substitute(e) for t, e in dashboard.queries()}
    # The A/B panel shows both configured variants; the tier panel the three tiers.
    variants = {
        r["metric"]["variant"] for r in query(base, d["A/B variant traffic"])["data"]["result"]
    }
    assert variants == {"none", "blend/control", "blend/more-svd"}
    tiers = {r["metric"]["tier"] for r in query(base, d["Fallback tiers"])["data"]["result"]}
    assert tiers == {"personalized", "cold_start", "popularity"}
    codes = {
        r["metric"]["code"]: float(r["value"][1])
        for r in query(base, d["Errors by code"])["data"]["result"]
    }
    assert codes["NOT_FOUND"] > 0 and codes["INVALID_ARGUMENT"] > 0 and codes["INTERNAL"] == 0
    lists = query(base, 'recsys_drift_window_lists{job="recsys"}')["data"]["result"]
    assert float(lists[0]["value"][1]) == ok["Recommend"]  # every list is in the window
    coverage = query(base, d["Catalog coverage"])["data"]["result"]
    assert 0 < float(coverage[0]["value"][1]) <= 1
    version = query(base, d["Model version"])["data"]["result"]
    assert len(version) == 1
    shown = query(base, d["Impressions per second by variant"])["data"]["result"]
    pairs = {(r["metric"]["experiment"], r["metric"]["variant"]) for r in shown}
    assert {("blend", "control"), ("blend", "more-svd")} <= pairs
    assert sum(float(r["value"][1]) for r in shown) > 0
    dropped = query(base, d["Dropped impressions"])["data"]["result"]
    assert float(dropped[0]["value"][1]) == 0
    reloads = query(base, d["Configuration reloads (SIGHUP) by result"])["data"]["result"]
    assert {r["metric"]["result"]: float(r["value"][1]) for r in reloads}["unchanged"] > 0


def test_every_alert_rule_loads_evaluates_and_parses(live) -> None:
    base, _ = live
    deadline = time.monotonic() + 10
    while True:  # every rule evaluated at least once
        groups = get(f"{base}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        evaluated = all(r.get("lastEvaluation", "").startswith("20") for r in rules)
        if evaluated or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(r["name"] for r in rules) == sorted(alert_names())
    for r in rules:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))
    exprs = [(r["name"], r["query"]) for r in rules]
    assert check_queries(base, exprs, need_data=False) == []
    # Nothing is wrong with this server: no alert fires (pending ones would need minutes).
    firing = [a for a in get(f"{base}/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]
    assert firing == []


def test_the_check_catches_bad_and_empty_queries(live) -> None:
    base, _ = live
    problems = check_queries(
        base,
        [
            ("unparsable", "sum(rate(recsys_requests_total[1m])"),
            ("no such metric", "recsys_no_such_metric"),
            ("fine", "recsys_model_loaded"),
        ],
        need_data=True,
    )
    assert len(problems) == 2
    assert problems[0].startswith("unparsable") and "bad_data" in problems[0]
    assert problems[1].startswith("no such metric") and problems[1].endswith("no data")

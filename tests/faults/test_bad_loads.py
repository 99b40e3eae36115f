"""2. Slow and broken model versions: the old version serves, health stays SERVING, each
broken version is refused with its reason counted, the next good version loads.

The slow version is a genuinely large one (70,000 users, popularity + item-CF), loaded with
the server's ``warmup_seconds = 5``: the warm-up scores its known users with real requests
for up to 5 s (all of them would take far longer), in a worker thread while the old version
keeps serving. No mock: the same code path as any load."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from fsupport import (
    HealthProbe,
    ServerProcess,
    calls,
    loadgen,
    metric_value,
    report,
    republish,
    summary,
)

from recsys_core import artifacts
from recsys_trainer import cli


@pytest.fixture(scope="module")
def big_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    data = root / "data.tsv"
    gen = ["generate", "--out", str(data), "--users", "70000", "--items", "2000"]
    assert cli.main([*gen, "--interactions", "300000"]) == 0
    train = ["train", "--interactions", str(data), "--out", str(root / "artifacts")]
    assert cli.main([*train, "--models", "popularity,item_cf", "--no-evaluate"]) == 0
    return root / "artifacts"


def stage(root: Path, staging: Path, damage=None) -> str:
    """Publishes a good version into ``staging``, damages it there, then moves it into
    ``root`` in one rename and points ``latest`` at it (the server never sees it half-made)."""
    path = republish(staging, keep=50)
    if damage is not None:
        damage(path)
    os.rename(path, root / path.name)
    (root / "latest").write_text(path.name + "\n")
    return path.name


def fix_checksum(version: Path, rel: str) -> None:
    """Rewrites the manifest's sha256/size for ``rel`` so that only the loader can object."""
    m = json.loads((version / "manifest.json").read_text())
    sha, size = artifacts._digest(version / rel)
    m["files"][rel] = {"sha256": sha, "bytes": size}
    (version / "manifest.json").write_text(json.dumps(m))


def truncate(v: Path) -> None:
    p = v / "item_cf.npz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    fix_checksum(v, "item_cf.npz")


def flip(v: Path) -> None:
    p = v / "svd.npz"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def wrong_shape(v: Path) -> None:
    import numpy as np

    with np.load(v / "ids.npz") as z:
        users, items = z["user_ids"], z["item_ids"]
    np.savez(v / "ids.npz", user_ids=users[:-7], item_ids=items)
    fix_checksum(v, "ids.npz")


def no_manifest(v: Path) -> None:
    (v / "manifest.json").unlink()


def symlink_out(v: Path) -> None:
    outside = v.parent.parent / "outside.npz"
    shutil.copy(v / "popularity.npz", outside)
    (v / "popularity.npz").unlink()
    (v / "popularity.npz").symlink_to(outside)


def test_slow_and_broken_versions(artifacts_root, big_root, tmp_path):
    staging = tmp_path / "staging"
    shutil.copytree(artifacts_root, staging)
    cfg = tmp_path / "server.toml"
    cfg.write_text("warmup_seconds = 5.0\n")
    srv = ServerProcess(
        "--artifacts",
        str(artifacts_root),
        "--store",
        f"sqlite:///{tmp_path}/ev.db",
        "--poll-seconds",
        "0.2",
        "--config",
        str(cfg),
    ).start()
    try:
        srv.wait_serving()
        url = srv.metrics_url
        out = tmp_path / "calls.json"
        probe = HealthProbe(srv.address, every=0.05)
        probe.start()
        gen = loadgen(srv.address, out, rate=100, duration=45, timeout=5)
        first = artifacts.latest_version(artifacts_root)

        # Slow: the big version takes >= 5 s; the small one answers meanwhile.
        reloads = metric_value(url, "recsys_model_reloads_total")
        big = artifacts.latest_version(big_root)
        shutil.copytree(big_root / big, artifacts_root / big)
        t_slow = time.time()
        (artifacts_root / "latest").write_text(big + "\n")
        deadline = time.monotonic() + 180  # >= 5 s of warm-up: this only bounds a hang
        while metric_value(url, "recsys_model_reloads_total") == reloads:
            assert time.monotonic() < deadline, "the big version never loaded"
            time.sleep(0.1)
        slow_seconds = metric_value(url, "recsys_model_load_seconds")
        t_big = time.time()

        # Broken: each refused with its reason counted.
        broken = {
            "corrupt_array": truncate,
            "checksum_mismatch": flip,
            "shape_mismatch": wrong_shape,
            "missing_manifest": no_manifest,
            "outside_root": symlink_out,
        }
        refused = {}
        for reason, damage in broken.items():
            before = metric_value(url, "recsys_model_load_failures_total", reason=reason)
            stage(artifacts_root, staging, damage)
            refused[reason] = wait_count(url, reason, before)
        for reason, make in {
            "empty": lambda: (artifacts_root / artifacts.new_version_name()).mkdir(),
            "bad_name": lambda: shutil.copytree(staging / first, artifacts_root / "new-model"),
        }.items():
            before = metric_value(url, "recsys_model_load_failures_total", reason=reason)
            make()
            refused[reason] = wait_count(url, reason, before)
        # A version directory that is itself a symlink to a directory outside.
        before = metric_value(url, "recsys_model_load_failures_total", reason="outside_root")
        (artifacts_root / artifacts.new_version_name()).symlink_to(staging / first)
        refused["outside_root (dir symlink)"] = wait_count(url, "outside_root", before)

        good = stage(artifacts_root, staging)
        deadline = time.monotonic() + 120  # >= 5 s of warm-up: this only bounds a hang
        while metric(url) != good:
            assert time.monotonic() < deadline, "the next good version did not load"
            time.sleep(0.1)
        gen.wait(120)
        samples = probe.stop()
        cs = calls(out)
        during_slow = [s for s in samples if t_slow <= s[0] <= t_big]
        # The big version began loading after t_slow and was swapped in slow_seconds (the
        # server's own measure) later: a call that started after t_slow and ended before
        # t_slow + slow_seconds was answered while it loaded, however slow the machine.
        loading = [
            c for c in cs if c[2] == "OK" and t_slow <= c[0] and c[0] + c[1] < t_slow + slow_seconds
        ]
        s = summary(cs)
        figures = {
            **s,
            "slow_load_seconds": round(slow_seconds, 2),
            "health_during_slow_load": sorted({x[2] for x in during_slow}),
            "health_checks_during_slow_load": len(during_slow),
            "refusals_counted": refused,
            "calls_during_slow_load": len(loading),
            "served_during_slow_load": sorted({c[3] for c in loading}),
        }
        report("slow_and_broken_loads", figures)
        assert s["codes"] == {"OK": len(cs)}, figures
        assert slow_seconds >= 5.0, figures
        assert figures["health_during_slow_load"] == ["SERVING"], figures
        assert figures["served_during_slow_load"] == [first], figures
        assert all(n == 1 for n in refused.values()), figures
    finally:
        srv.kill()


def metric(url: str) -> str:
    from fsupport import scrape

    for line in scrape(url).splitlines():
        if line.startswith("recsys_model_info{") and line.endswith(" 1.0"):
            return line.split('"')[1]
    return ""


def wait_count(url: str, reason: str, before: float, timeout: float = 20) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = metric_value(url, "recsys_model_load_failures_total", reason=reason)
        if now > before:
            time.sleep(0.6)  # counted once, not again on the next polls
            return metric_value(url, "recsys_model_load_failures_total", reason=reason) - before
        time.sleep(0.1)
    return 0.0

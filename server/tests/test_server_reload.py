"""Hot reload: no model yet, swapping versions under load, refusing damaged versions."""

from __future__ import annotations

import json
import shutil
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    artifacts_copy,
    code_of,
    event,
    flip_byte,
    metric,
    republish,
    scrape,
    serving,
    trained,
    wait_until,
)

from recsys_core import artifacts
from recsys_proto.v1 import recommender_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_no_model_yet_is_unavailable_then_serves(trained, tmp_path):  # noqa: F811
    root = tmp_path / "artifacts"
    root.mkdir()
    with serving(root, tmp_path, wait=False) as srv:
        c = Client(srv.address)
        try:
            assert c.status() == NOT_SERVING
            assert c.status("recsys.v1.Recommender") == NOT_SERVING
            for call, req in [
                (c.Recommend, pb.RecommendRequest(user_id="u", k=3)),
                (c.ListModels, pb.ListModelsRequest()),
                (c.SimilarItems, pb.SimilarItemsRequest(item_id="i001", k=3)),
            ]:
                code, msg = code_of(call, req)
                assert code == grpc.StatusCode.UNAVAILABLE and "no model loaded" in msg
            # Writes are durable before any model is loaded, and replayed once one is.
            early = [event(f"early-{n}", "early-bird", f"i00{n}", "purchase") for n in range(3)]
            r = c.RecordInteractions(pb.RecordInteractionsRequest(events=early))
            assert r.recorded == 3
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert not r.changed and "no model version" in r.message

            shutil.copytree(trained, root, dirs_exist_ok=True)
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert r.changed and r.version == artifacts.latest_version(trained)
            deadline = time.monotonic() + 10
            while c.status() != SERVING and time.monotonic() < deadline:
                time.sleep(0.02)
            assert c.status() == SERVING and c.status("recsys.v1.Recommender") == SERVING
            got = c.Recommend(pb.RecommendRequest(user_id="early-bird", k=5))
            assert got.fallback_tier == pb.FALLBACK_TIER_COLD_START  # 3 replayed events
            assert not {i.item_id for i in got.items} & {"i000", "i001", "i002"}
        finally:
            c.close()


def test_hot_reload_under_load_drops_nothing(artifacts_copy, tmp_path):  # noqa: F811
    old = artifacts.latest_version(artifacts_copy)
    with serving(artifacts_copy, tmp_path, poll_seconds=0.1) as srv:
        stop = threading.Event()
        seen: list[tuple[int, str]] = []  # (client thread, version), in the order answered
        failures: list[BaseException] = []

        def hammer(n: int) -> None:
            c = Client(srv.address)
            i = 0
            try:
                while not stop.is_set():
                    model = ("", "item_cf", "svd", "user_cf")[i % 4]
                    try:
                        r = c.Recommend(
                            pb.RecommendRequest(
                                user_id=f"u{(i * 7 + n) % 600:03d}", k=5, model=model, explain=True
                            )
                        )
                        seen.append((n, r.model_version))
                        assert len(r.items) == 5
                    except BaseException as e:
                        failures.append(e)
                    i += 1
            finally:
                c.close()

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(seen) >= 30, "answers before the reload")
            new = republish(artifacts_copy).name
            wait_until(lambda: any(v == new for _, v in seen), "answers from the new version")
            n_at_swap = len(seen)
            wait_until(lambda: len(seen) >= n_at_swap + 50, "answers after the reload")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not failures, failures[:3]
    versions = [v for _, v in seen]
    assert versions[0] == old and new in versions
    first_new = versions.index(new)
    assert set(versions[:first_new]) == {old}
    # Each client thread goes from the old version to the new one once, never back.
    for n in range(len(threads)):
        mine = [v for t, v in seen if t == n]
        assert mine == sorted(mine, key=[old, new].index), n
    # After the first answer from the new version, each other thread can still land one
    # answer started on the old version; its next call started after the swap.
    assert versions[first_new:].count(old) <= len(threads) - 1
    assert set(versions) == {old, new}


def test_damaged_version_is_refused_old_keeps_serving(artifacts_copy, tmp_path):  # noqa: F811
    old = artifacts.latest_version(artifacts_copy)
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        try:
            new_dir = republish(artifacts_copy)
            flip_byte(new_dir / "item_cf.npz")
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert not r.changed and r.version == old
            assert "checksum_mismatch" in r.message
            assert c.Recommend(pb.RecommendRequest(user_id="u001", k=3)).model_version == old
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_model_load_failures_total", reason="checksum_mismatch") == 1
            assert metric(text, "recsys_model_load_failures_total", reason="missing_file") == 0
            assert metric(text, "recsys_model_info", version=old) == 1

            # Not retried while the directory is unchanged.
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert not r.changed and "was refused" in r.message
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_model_load_failures_total", reason="checksum_mismatch") == 1

            # Repaired in place: the directory changed, so it is tried again and loads.
            flip_byte(new_dir / "item_cf.npz")
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert r.changed and r.version == new_dir.name
            assert c.Recommend(pb.RecommendRequest(user_id="u001", k=3)).model_version == r.version
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_model_info", version=new_dir.name) == 1
            assert metric(text, "recsys_model_info", version=old) is None
            assert metric(text, "recsys_model_reloads_total") == 2
            assert metric(text, "recsys_model_load_seconds") > 0
            assert metric(text, "recsys_model_trained_timestamp_seconds") > 1.6e9
        finally:
            c.close()


def _half_written(root, good: str) -> str:
    """A copy of version ``good`` under a newer name with a model file missing, as left by a
    writer that bypassed the temp-dir protocol; ``latest`` points at it."""
    name = artifacts.new_version_name()
    dst = root / name
    shutil.copytree(root / good, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = name
    (dst / "manifest.json").write_text(json.dumps(manifest))
    (dst / "svd.npz").unlink()
    (root / "latest").write_text(name + "\n")
    return name


@pytest.mark.parametrize("poll", [False, True])
def test_half_written_version_is_refused(artifacts_copy, tmp_path, poll):  # noqa: F811
    old = artifacts.latest_version(artifacts_copy)
    with serving(artifacts_copy, tmp_path, poll_seconds=0.05 if poll else 3600.0) as srv:
        c = Client(srv.address)
        try:
            bad = _half_written(artifacts_copy, old)
            if poll:
                wait_until(
                    lambda: metric(
                        scrape(srv.metrics_url),
                        "recsys_model_load_failures_total",
                        reason="missing_file",
                    ),
                    "the half-written version refused",
                    every=0.05,
                )
                # Five more polls of the unchanged directory: still one failure, no retry.
                versions = srv.running.core.versions
                real_refresh = versions.refresh
                polls = []

                async def counted_refresh():
                    result = await real_refresh()
                    polls.append(result)
                    return result

                versions.refresh = counted_refresh
                wait_until(lambda: len(polls) >= 5, "five more polls")
                assert all(not r.changed and "was refused" in r.message for r in polls), polls
            else:
                r = c.ReloadModels(pb.ReloadModelsRequest())
                assert not r.changed and "missing_file" in r.message and bad in r.message
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_model_load_failures_total", reason="missing_file") == 1
            assert c.Recommend(pb.RecommendRequest(user_id="u001", k=3)).model_version == old
            assert c.status() == SERVING
        finally:
            c.close()


def test_reload_without_change(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path) as srv:
        c = Client(srv.address)
        try:
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert (r.changed, r.version) == (False, artifacts.latest_version(trained))
            assert "already serving" in r.message
        finally:
            c.close()

"""Configuration hot reload: a `recsys-serve` process re-reads its --config file on SIGHUP and
applies the experiment settings; an invalid file is refused with the field named, and the
previous configuration keeps serving."""

from __future__ import annotations

import signal

import pytest
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    ServerProcess,
    metric,
    scrape,
    serving,
    sqlite_url,
    trained,
    wait_until,
)

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.config import Experiment, Outcomes, Variant
from recsys_server.config_reload import APPLIED, REFUSED, UNCHANGED, moved
from recsys_server.router import assign, bucket

USERS = [f"hup-{n}" for n in range(300)]


def experiment_toml(shares=(0.5, 0.3), names=("a", "b"), models=("hybrid", "svd"), kind="ab"):
    out = f'[[experiments]]\nname = "exp"\nkind = "{kind}"\n'
    for name, model, share in zip(names, models, shares, strict=True):
        out += f'[[experiments.variants]]\nname = "{name}"\nmodel = "{model}"\nshare = {share}\n'
    return out


def served(c: Client) -> dict[str, str]:
    """user -> the variant the server reports ('' outside the experiment)."""
    return {u: c.Recommend(pb.RecommendRequest(user_id=u, k=2)).variant for u in USERS}


def predicted(exp: Experiment) -> dict[str, str]:
    got = {u: assign((exp,), u) for u in USERS}
    return {u: "" if p is None else p[1].name for u, p in got.items()}


def reloads(srv: ServerProcess, result: str) -> float:
    return metric(scrape(srv.metrics_url), "recsys_config_reloads_total", result=result) or 0.0


def hup_and_wait(srv: ServerProcess, result: str) -> None:
    before = reloads(srv, result)
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reloads(srv, result) > before, f"a reload counted as {result}")


def test_sighup_applies_experiments_and_refuses_invalid_files(trained, tmp_path):  # noqa: F811
    path = tmp_path / "server.toml"
    path.write_text(experiment_toml())
    args = ("--artifacts", str(trained), "--store", sqlite_url(tmp_path / "s.db"))
    srv = ServerProcess(*args, "--config", str(path)).start()
    c = None
    try:
        srv.wait_serving()
        c = Client(srv.address)
        first = Experiment("exp", (Variant("a", "hybrid", 0.5), Variant("b", "svd", 0.3)))
        before = served(c)
        assert before == predicted(first)
        assert set(before.values()) == {"a", "b", ""}

        # Shares change: a covers [0, 0.4), b [0.4, 0.8). Only users whose bucket lies in
        # [0.4, 0.5) move (a -> b); everyone else keeps their variant.
        path.write_text(experiment_toml(shares=(0.4, 0.4)))
        hup_and_wait(srv, APPLIED)
        second = Experiment("exp", (Variant("a", "hybrid", 0.4), Variant("b", "svd", 0.4)))
        after = served(c)
        assert after == predicted(second)
        moved = {u for u in USERS if after[u] != before[u]}
        assert moved == {u for u in USERS if 0.4 <= bucket("exp", u) < 0.5}
        assert moved and all((before[u], after[u]) == ("a", "b") for u in moved)
        assert "config reload applied: experiments changed" in srv.stderr
        assert "users' assignments move in exp: its variants or shares changed" in srv.stderr

        # Invalid files: refused as a whole, the log names the field, nothing changes.
        invalid = {
            experiment_toml(shares=(0.7, 0.4)): "shares add up to 1.1 > 1",
            experiment_toml(names=("a", "a")): "variant names must be unique",
            experiment_toml(models=("hybrid", "nope")): "model 'nope' is not one of",
            experiment_toml(kind="bandit"): "kind must be one of ab, interleave, got 'bandit'",
            "attribution_hours = -1\n" + experiment_toml(): "attribution_hours must be > 0",
            experiment_toml() + "[outcomes]\nclicks = ['tap']\n": "outcomes.clicks",
            "[[experiments]\n": "server.toml",  # not TOML at all
        }
        for text, message in invalid.items():
            path.write_text(text)
            hup_and_wait(srv, REFUSED)
            assert message in srv.stderr.splitlines()[-1], srv.stderr.splitlines()[-1]
            assert "config reload refused" in srv.stderr.splitlines()[-1]
            assert served(c) == after

        # A start-only setting changed: logged as needing a restart, not applied; the same
        # experiments are then "unchanged".
        path.write_text("port = 1\nposter = 2\n" + experiment_toml(shares=(0.4, 0.4)))
        hup_and_wait(srv, REFUSED)  # an unknown key refuses the file
        assert "unknown key(s) poster" in srv.stderr
        path.write_text("port = 1\n" + experiment_toml(shares=(0.4, 0.4)))
        hup_and_wait(srv, UNCHANGED)
        assert "port changed in" in srv.stderr and "applied only by a restart" in srv.stderr
        assert served(c) == after
        assert c.Recommend(pb.RecommendRequest(user_id="hup-1", k=2)).items  # still on its port

        # Removing the experiment: every user goes back to the default model.
        path.write_text("")
        hup_and_wait(srv, APPLIED)
        assert set(served(c).values()) == {""}
    finally:
        if c is not None:
            c.close()
        srv.kill()


def test_reload_without_a_file_is_refused(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path) as srv:
        got = srv.run(srv.running.reloader.reload())
        assert got.result == REFUSED and "without --config" in got.message


def test_reload_applies_outcomes_attribution_and_new_variant_routes(trained, tmp_path):  # noqa: F811
    path = tmp_path / "server.toml"
    path.write_text(experiment_toml())
    with serving(trained, tmp_path) as srv:
        running = srv.running
        running.reloader.path = path
        snap = running.core.versions.snapshot
        hybrid_cache = snap.caches[id(snap.models["hybrid"])]
        path.write_text(
            "attribution_hours = 2.5\n"
            + experiment_toml(shares=(0.5, 0.5), models=("hybrid", "item_cf"))
            + "[outcomes]\nclicks = ['click', 'view']\n"
        )
        got = srv.run(running.reloader.reload())
        assert got.result == APPLIED
        assert got.message == "applied: experiments, outcomes, attribution_hours"
        cfg = running.core.config
        assert cfg.attribution_hours == 2.5 and cfg.outcomes == Outcomes(clicks=("click", "view"))
        new = running.core.versions.snapshot
        assert new.version == snap.version and new is not snap
        assert new.variant_models["exp/b"] is new.models["item_cf"]
        assert new.references["exp/b"] == pytest.approx(snap.references["item_cf"])
        assert new.caches[id(new.models["hybrid"])] is hybrid_cache  # stored rankings kept
        assert running.core.versions.config is cfg
        c = Client(srv.address)
        try:
            user = next(u for u in USERS if 0.5 <= bucket("exp", u) < 1.0)
            assert c.Recommend(pb.RecommendRequest(user_id=user, k=2)).variant == "b"
        finally:
            c.close()
        # The same file again: nothing to apply.
        assert srv.run(running.reloader.reload()).result == UNCHANGED
        text = scrape(srv.metrics_url)
        assert metric(text, "recsys_config_reloads_total", result="applied") == 1
        assert metric(text, "recsys_config_reloads_total", result="unchanged") == 1
        assert metric(text, "recsys_config_reloads_total", result="refused") == 0
        assert (
            metric(
                text, "recsys_recommendations_total", model="item_cf", variant="exp/b",
                tier="personalized",
            ) is not None
        )  # fmt: skip


def test_a_reloaded_hybrid_variant_serves_its_weights(trained, tmp_path):  # noqa: F811
    path = tmp_path / "server.toml"
    path.write_text("")
    with serving(trained, tmp_path) as srv:
        running = srv.running
        running.reloader.path = path
        path.write_text(
            experiment_toml(shares=(0.0, 1.0), models=("hybrid", "hybrid"))
            + "hybrid_weights = { svd = 3.0 }\n"
        )
        got = srv.run(running.reloader.reload())
        assert got.result == APPLIED, got
        snap = running.core.versions.snapshot
        b = snap.variant_models["exp/b"]
        assert b is not snap.models["hybrid"] and id(b) in snap.caches
        assert snap.references["exp/b"] > 0
        assert b.weights_["svd"] == 3.0 != snap.models["hybrid"].weights_.get("svd")
        c = Client(srv.address)
        try:
            r = c.Recommend(pb.RecommendRequest(user_id=str(snap.user_ids[0]), k=5))
            assert (r.experiment, r.variant, r.model) == ("exp", "b", "hybrid")
        finally:
            c.close()
        # Removed: the weighted hybrid is kept alive (its id never reused by a new route
        # while explanations are kept by route id).
        path.write_text("")
        assert srv.run(running.reloader.reload()).result == APPLIED
        after = running.core.versions.snapshot
        assert after.variant_models == {} and any(m is b for m in after.retired)
        assert id(b) not in after.caches


def test_moved_names_exactly_the_experiments_whose_users_move():
    a = Experiment("a", (Variant("x", "svd", 0.2),))
    b = Experiment("b", (Variant("y", "svd", 0.5), Variant("z", "hybrid", 0.5)))
    c = Experiment("c", (Variant("w", "svd", 1.0),))
    before = (a, b)
    assert moved(before, before) == ()
    # Another model or weights for a variant: the same users see it.
    b_model = Experiment("b", (Variant("y", "item_cf", 0.5), Variant("z", "hybrid", 0.5)))
    assert moved(before, (a, b_model)) == ()
    # b's split changes at the same total: b's users move, nobody else.
    b_split = Experiment("b", (Variant("y", "svd", 0.4), Variant("z", "hybrid", 0.6)))
    assert moved(before, (a, b_split)) == ("b: its variants or shares changed",)
    # a covers more: a's users move, and b's (some now reach a first).
    a_more = Experiment("a", (Variant("x", "svd", 0.3),))
    assert moved(before, (a_more, b)) == (
        "a: its variants or shares changed",
        "b: an experiment before it changed its coverage",
    )
    # Appended: only the new experiment takes users (those no experiment covered).
    assert moved(before, (a, b, c)) == ("c: new",)
    # Inserted first, or removed: the later ones move.
    assert moved(before, (c, a, b)) == (
        "c: new",
        "a: an experiment before it changed its coverage",
        "b: an experiment before it changed its coverage",
    )
    assert moved(before, (b,)) == (
        "b: an experiment before it changed its coverage",
        "a: removed",
    )

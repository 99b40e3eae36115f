"""recsys-train end to end on tiny data: generate, train, evaluate, recommend, refresh."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from recsys_core import artifacts
from recsys_core.models.registry import COMPONENTS, NAMES
from recsys_trainer.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "data" / "interactions.tsv"
    args = ["generate", "--out", str(out), "--users", "300", "--items", "120"]
    assert main([*args, "--interactions", "6000", "--seed", "5"]) == 0
    return out


def test_train_publishes_every_model_with_metrics(data, tmp_path):
    assert main(["train", "--interactions", str(data), "--out", str(tmp_path)]) == 0
    loaded = artifacts.load_version(tmp_path / artifacts.latest_version(tmp_path))
    assert set(loaded.models) == set(NAMES)
    assert loaded.catalog is not None and loaded.history is not None
    for name in loaded.models:
        assert 0 <= loaded.manifest["metrics"][name]["ndcg@10"] <= 1


@pytest.mark.parametrize("name", NAMES)
def test_train_one_model(data, tmp_path, name):
    """``--models NAME`` publishes that model (a hybrid also gets its components)."""
    args = ["train", "--interactions", str(data), "--out", str(tmp_path), "--no-evaluate"]
    assert main([*args, "--models", name]) == 0
    loaded = artifacts.load_version(tmp_path / artifacts.latest_version(tmp_path))
    assert set(loaded.models) == {name} | (set(COMPONENTS) if name == "hybrid" else set())


def test_recommend_exports_json_lines_and_cold_start(data, tmp_path):
    art = tmp_path / "art"
    assert main(["train", "--interactions", str(data), "--out", str(art), "--no-evaluate"]) == 0
    loaded = artifacts.load_version(art / artifacts.latest_version(art))
    known = loaded.user_ids[0]
    users = tmp_path / "users.txt"
    users.write_text(f"{known}\nnobody\n")
    out = tmp_path / "recs.jsonl"
    args = ["recommend", "--artifacts", str(art), "--model", "item_cf", "--users", str(users)]
    assert main([*args, "--k", "5", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["user"] for x in lines] == [known, "nobody"]
    assert all(len(x["items"]) == 5 for x in lines)
    seen = set(loaded.item_ids[loaded.history[0].indices])
    assert not seen & set(lines[0]["items"])
    pop = loaded.models["popularity"].scores_.argsort()[::-1][:5]
    assert lines[1]["items"] == loaded.item_ids[pop].tolist()


def test_evaluate_writes_the_report(data, tmp_path):
    args = ["evaluate", "--interactions", str(data), "--report", str(tmp_path)]
    assert main([*args, "--models", "popularity,item_cf", "--k", "5"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["metrics"]) == {"popularity", "item_cf"}
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_column_flags_and_event_weights(tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,action,ts\nu1,i1,view,5\nu1,i2,buy,6\nu2,i1,view,7\n")
    base = ["train", "--interactions", str(log), "--out", str(tmp_path / "a"), "--no-evaluate"]
    cols = ["--user-col", "user_id", "--item-col", "item_id", "--event-col", "action"]
    cols += ["--timestamp-col", "ts", "--models", "popularity"]
    assert main([*base, *cols, "--event-weights", "view=1,buy=5"]) == 0
    loaded = artifacts.load_version(tmp_path / "a" / artifacts.latest_version(tmp_path / "a"))
    scores = dict(zip(loaded.item_ids.tolist(), loaded.models["popularity"].scores_, strict=True))
    assert scores["i2"] > scores["i1"]  # one purchase (5) outweighs two views
    assert main([*base, *cols, "--event-weights", "view=1"]) == 2
    assert "row 3, column 'action'" in capsys.readouterr().err
    assert main([*base, *cols, "--event-weights", "view=1,buy"]) == 2


def test_bad_file_exits_2_naming_file_row_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("user\titem\tweight\ttimestamp\nu1\ti1\t-3\t5\n")
    assert main(["train", "--interactions", str(bad), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "bad.tsv" in err and "row 2" in err and "'weight'" in err
    assert not (tmp_path / "a").exists() or artifacts.list_versions(tmp_path / "a") == []


def _record(url: str, n: int = 3) -> None:
    from recsys_core.datastore import open_store
    from recsys_core.events import Event

    with open_store(url) as store:
        events = [Event(f"e{i}", "fresh-user", "i0001", "click", 1.7e9 + i) for i in range(n)]
        asyncio.run(store.append(events))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_refresh_reads_the_store_and_records_its_cursor(data, tmp_path, request, backend):
    url = (
        f"sqlite:///{tmp_path}/events.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_dsn")
    )
    _record(url)
    args = ["refresh", "--interactions", str(data), "--store", url]
    assert main([*args, "--out", str(tmp_path / "art"), "--models", "popularity,item_cf"]) == 0
    loaded = artifacts.load_version(tmp_path / "art" / artifacts.latest_version(tmp_path / "art"))
    assert loaded.manifest["params"]["store_seq"] == 3  # the server replays seq > 3
    assert "fresh-user" in loaded.user_ids.tolist()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_refresh_carries_the_stored_catalogue_into_the_version(data, tmp_path, request, backend):
    from recsys_core.datastore import ItemChange, open_store

    url = (
        f"sqlite:///{tmp_path}/events.db"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_dsn")
    )
    _record(url)
    with open_store(url) as store:
        changes = [
            ItemChange("brand-new", True, "Brand new thing", ("Gadgets", "Home"), {"maker": "zq"}),
            ItemChange("twin-new", True, "Twin", ("Toys",), {"maker": "zq"}),
            ItemChange("i001", True, "Renamed", ("Drama",)),
            ItemChange("i002", False, available=False),  # availability only
        ]
        asyncio.run(store.change_items(changes))
    args = ["refresh", "--interactions", str(data), "--store", url]
    assert main([*args, "--out", str(tmp_path / "art"), "--models", "popularity,content"]) == 0
    loaded = artifacts.load_version(tmp_path / "art" / artifacts.latest_version(tmp_path / "art"))
    cat = loaded.catalog
    assert loaded.manifest["params"]["store_items"] == 4
    # the new items are in the index, and the content model learnt their stored attributes:
    # the two share only the "maker" attribute, so each is the other's nearest item
    ids = loaded.item_ids.tolist()
    similar = loaded.models["content"].similar_items(ids.index("brand-new"), k=1)
    assert [ids[i] for i in similar.items] == ["twin-new"]
    assert cat.title("brand-new") == "Brand new thing"
    assert cat.categories_of("brand-new") == ("Gadgets", "Home")
    assert (cat.title("i001"), cat.categories_of("i001")) == ("Renamed", ("Drama",))
    from recsys_core.catalog import load_catalog

    given = load_catalog(data.with_name("catalog.tsv"))
    assert cat.title("i002") == given.title("i002") != ""  # kept from the file
    assert len(cat) == len(given) + 2


def test_refresh_with_a_missing_store_file_exits_2_naming_it(data, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/typo.db"
    args = ["refresh", "--interactions", str(data), "--store", url, "--out", str(tmp_path / "a")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "typo.db" in err and "no such database file" in err
    assert not (tmp_path / "typo.db").exists()


def test_refresh_takes_the_store_from_the_environment(monkeypatch, capsys):
    from recsys_trainer.cli import build_parser

    args = ["refresh", "--interactions", "x.tsv", "--out", "art"]
    monkeypatch.delenv("RECSYS_STORE_URL", raising=False)
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(args)
    assert e.value.code == 2 and "--store" in capsys.readouterr().err
    monkeypatch.setenv("RECSYS_STORE_URL", "postgresql://recsys:pw@db/recsys")
    assert build_parser().parse_args(args).store == "postgresql://recsys:pw@db/recsys"
    # The flag still wins.
    assert build_parser().parse_args([*args, "--store", "sqlite:///e.db"]).store == "sqlite:///e.db"

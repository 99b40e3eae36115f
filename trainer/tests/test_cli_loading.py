"""recsys-train on the files a user reaches for first: MovieLens 1M, headerless TSV, Steam."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys_core import artifacts
from recsys_core.models.registry import NAMES
from recsys_trainer.cli import main


def latest(root: Path) -> artifacts.LoadedArtifacts:
    return artifacts.load_version(root / artifacts.latest_version(root))


@pytest.fixture(scope="module")
def ml_1m(tmp_path_factory) -> Path:
    """A tiny MovieLens 1M style folder: ratings.dat and movies.dat (latin-1), '::' separated."""
    folder = tmp_path_factory.mktemp("ml-1m")
    rng = np.random.default_rng(7)
    lines = []
    for user in range(1, 41):
        group = user % 2  # two tastes: odd or even movie ids
        liked = rng.choice(np.arange(1 + group, 31, 2), size=8, replace=False)
        other = rng.choice(np.arange(2 - group, 31, 2), size=2, replace=False)
        for n, movie in enumerate([*liked, *other]):
            rating = 5 if n < 8 else 1
            lines.append(f"{user}::{movie}::{rating}::{978300000 + user * 100 + n}")
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    movies = [f"{m}::Film {m}, The (1990)::{'Drama' if m % 2 else 'Comedy'}" for m in range(1, 31)]
    movies[5] = "6::Misérables, Les (1995)::Drama|Musical"
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    return folder


def test_train_on_ml_1m_ratings_dat_with_no_flags(ml_1m, tmp_path):
    assert (
        main(["train", "--interactions", str(ml_1m / "ratings.dat"), "--out", str(tmp_path)]) == 0
    )
    loaded = latest(tmp_path)
    assert set(loaded.models) == set(NAMES)
    assert loaded.user_ids.tolist() == [str(u) for u in range(1, 41)]
    assert 0 <= loaded.manifest["metrics"]["hybrid"]["ndcg@10"] <= 1


@pytest.mark.parametrize("given", [True, False], ids=["--catalog", "found-beside"])
def test_train_with_movies_dat_catalog(ml_1m, tmp_path, given):
    """movies.dat is the catalogue, named or found beside ratings.dat with no flag."""
    args = ["train", "--interactions", str(ml_1m / "ratings.dat"), "--out", str(tmp_path)]
    args += ["--no-evaluate", "--models", "popularity"]
    if given:
        args += ["--catalog", str(ml_1m / "movies.dat")]
    assert main(args) == 0
    catalog = latest(tmp_path).catalog
    assert catalog is not None and catalog.title("6") == "Misérables, Les (1995)"
    assert catalog.categories_of("6") == ("Drama", "Musical")


def test_evaluate_with_temporal_split(ml_1m, tmp_path):
    """The latest 20% of events (by timestamp) are the test part: 400 ratings, 80 of them."""
    args = ["evaluate", "--interactions", str(ml_1m / "ratings.dat"), "--split", "temporal"]
    args += ["--models", "popularity", "--report", str(tmp_path)]
    assert main(args) == 0
    protocol = json.loads((tmp_path / "report.json").read_text())["protocol"]
    assert protocol["split"] == "temporal"
    assert (protocol["n_train_interactions"], protocol["n_test_interactions"]) == (320, 80)


def test_headerless_tsv_with_column_positions(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text("1000\tu1\ti1\t3\n1001\tu1\ti2\t1\n1002\tu2\ti1\t2\n")
    args = ["train", "--interactions", str(log), "--out", str(tmp_path / "a"), "--no-evaluate"]
    args += ["--models", "popularity", "--user-col", "2", "--item-col", "3"]
    assert main([*args, "--weight-col", "4", "--timestamp-col", "1"]) == 0
    loaded = latest(tmp_path / "a")
    assert loaded.user_ids.tolist() == ["u1", "u2"] and loaded.item_ids.tolist() == ["i1", "i2"]
    assert loaded.history.toarray().tolist() == [[3.0, 1.0], [2.0, 0.0]]


def test_position_flags_report_file_row_and_position(tmp_path, capsys):
    log = tmp_path / "log.tsv"
    log.write_text("u1\ti1\t3\nu1\ti2\tthree\n")
    args = ["train", "--interactions", str(log), "--out", str(tmp_path / "a")]
    assert main([*args, "--user-col", "1", "--item-col", "2", "--weight-col", "3"]) == 2
    err = capsys.readouterr().err
    assert "log.tsv, row 2, column '3'" in err and "'three'" in err
    assert main([*args, "--user-col", "1", "--item-col", "2", "--weight-col", "rating"]) == 2
    assert "use positions for all" in capsys.readouterr().err
    assert main([*args, "--user-col", "0", "--item-col", "2"]) == 2
    assert "count from 1" in capsys.readouterr().err


def test_bad_rating_in_ratings_dat_exits_2(tmp_path, capsys):
    bad = tmp_path / "ratings.dat"
    bad.write_text("1::10::5::978300760\n1::11::five::978300761\n")
    assert main(["train", "--interactions", str(bad), "--out", str(tmp_path / "a")]) == 2
    assert "ratings.dat, row 2, column 'rating'" in capsys.readouterr().err


def test_steam_play_log_with_no_flags(tmp_path):
    log = tmp_path / "steam-200k-play.csv"
    log.write_text(
        "user-id,game-title,value,\n"
        "151603712,The Elder Scrolls V Skyrim,273,1\n"
        '151603712,"Papers, Please",5.5,\n'
        "59945701,The Elder Scrolls V Skyrim,58,\n"
    )
    args = ["train", "--interactions", str(log), "--out", str(tmp_path / "a"), "--no-evaluate"]
    assert main([*args, "--models", "popularity"]) == 0
    loaded = latest(tmp_path / "a")
    assert loaded.item_ids.tolist() == ["Papers, Please", "The Elder Scrolls V Skyrim"]
    assert loaded.history.sum() == pytest.approx(273 + 5.5 + 58)

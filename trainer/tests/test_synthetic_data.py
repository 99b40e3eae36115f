import numpy as np
import polars as pl
import pytest

from recsys_core.catalog import load_catalog
from recsys_core.data import from_frame, load_interactions
from recsys_core.metrics import ndcg_at_k
from recsys_core.splits import random_holdout, relevant_items
from recsys_trainer.synthetic import CATEGORIES, EVENTS, generate, write

N_USERS, N_ITEMS, N_INTER = 2_000, 1_000, 100_000
WEEK = 7 * 86_400


@pytest.fixture(scope="module")
def data():
    return generate(N_USERS, N_ITEMS, N_INTER, seed=7)


def test_reproducible_for_a_seed(data):
    df, catalog = data
    df2, catalog2 = generate(N_USERS, N_ITEMS, N_INTER, seed=7)
    assert df.equals(df2)
    assert catalog.titles.tolist() == catalog2.titles.tolist()
    assert catalog.categories == catalog2.categories
    df3, _ = generate(N_USERS, N_ITEMS, N_INTER, seed=8)
    assert not df.equals(df3)


def test_catalog_does_not_depend_on_users_or_interactions(data):
    _, catalog = data
    _, other = generate(50, N_ITEMS, 1_000, seed=7)
    assert other.titles.tolist() == catalog.titles.tolist()
    assert other.categories == catalog.categories


@pytest.mark.parametrize("n", [0, 1, 7, 1_000, 12_345])
def test_counts_exact(n):
    df, catalog = generate(50, 40, n, seed=1)
    assert df.height == n
    assert len(catalog) == 40
    assert df.columns == ["user", "item", "event", "weight", "timestamp"]


def test_schema_and_ids(data):
    df, catalog = data
    assert df.schema == pl.Schema(
        {
            "user": pl.String,
            "item": pl.String,
            "event": pl.String,
            "weight": pl.Float32,
            "timestamp": pl.Int64,
        }
    )
    assert df["user"].n_unique() <= N_USERS and df["item"].n_unique() <= N_ITEMS
    assert set(df["item"].unique().to_list()) <= set(catalog.item_ids.tolist())
    assert set(df["event"].unique().to_list()) == set(EVENTS)
    weights = dict(df.select("event", "weight").unique().iter_rows())
    assert weights == {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
    assert df["timestamp"].is_sorted()


def test_catalog_titles_and_categories(data):
    _, catalog = data
    assert all(catalog.titles) and len(set(catalog.titles.tolist())) > N_ITEMS // 4
    assert catalog.category_names == CATEGORIES
    assert all(1 <= len(c) <= 2 for c in catalog.categories)
    # Every category has items.
    assert {c[0] for c in catalog.categories} == set(CATEGORIES)


def test_long_tail_items_and_users(data):
    df, _ = data
    items = np.sort(df["item"].value_counts()["count"].to_numpy())[::-1]
    assert items[: N_ITEMS // 10].sum() / N_INTER > 0.40
    users = np.sort(df["user"].value_counts()["count"].to_numpy())[::-1]
    assert users[: N_USERS // 10].sum() / N_INTER > 0.25
    assert users[0] > 10 * np.median(users)


def test_funnel_shape(data):
    df, _ = data
    counts = dict(df["event"].value_counts().iter_rows())
    assert counts["view"] > 3 * counts["click"] > 3 * counts["purchase"] > 0
    assert counts["click"] > counts["add_to_cart"] > counts["purchase"]


@pytest.mark.parametrize("event", ["click", "add_to_cart", "purchase"])
def test_every_funnel_event_follows_a_view_of_the_same_item(data, event):
    df, _ = data
    first_view = (
        df.filter(pl.col("event") == "view")
        .group_by("user", "item")
        .agg(pl.col("timestamp").min().alias("first_view"))
    )
    later = df.filter(pl.col("event") == event).join(first_view, on=["user", "item"], how="left")
    assert later.height > 0
    assert later["first_view"].null_count() == 0
    assert (later["first_view"] < later["timestamp"]).all()


def test_timestamps_span_weeks(data):
    df, _ = data
    span = df["timestamp"].max() - df["timestamp"].min()
    assert 7 * WEEK < span < 8 * WEEK + 86_400


def test_item_popularity_trends_and_launches(data):
    df, _ = data
    t0 = df["timestamp"].min()
    weeks = df.with_columns(week=((pl.col("timestamp") - t0) // WEEK).clip(0, 7))
    per = weeks.group_by("item").agg(
        early=(pl.col("week") < 2).sum(), late=(pl.col("week") >= 6).sum(), total=pl.len()
    )
    busy = per.filter(pl.col("total") >= 50)
    ratio = (busy["late"] + 1) / (busy["early"] + 1)
    trending = ((ratio > 3) | (ratio < 1 / 3)).mean()
    assert trending > 0.10  # plenty of items rise or fade
    launched = per.filter((pl.col("early") == 0) & (pl.col("total") >= 30)).height
    assert launched >= 10  # items that only appear mid-period


def test_users_concentrate_on_preferred_categories(data):
    df, catalog = data
    inter = from_frame(df)
    cat_index = {c: j for j, c in enumerate(catalog.category_names)}
    primary = np.array([cat_index[catalog.categories_of(i)[0]] for i in inter.item_ids])
    k = len(cat_index)
    # Preferred categories from one random half of each user's rows, measured on the other.
    half = np.random.default_rng(0).random(len(inter)) < 0.5
    cell = inter.user_idx.astype(np.int64) * k + primary[inter.item_idx]
    a = np.bincount(cell[half], minlength=inter.n_users * k).reshape(-1, k)
    b = np.bincount(cell[~half], minlength=inter.n_users * k).reshape(-1, k)
    users = (a.sum(1) >= 20) & (b.sum(1) >= 20)
    top3 = np.argsort(-a[users], axis=1)[:, :3]
    share = np.take_along_axis(b[users], top3, axis=1).sum(1) / b[users].sum(1)
    overall = b.sum(0) / b.sum()
    baseline = overall[top3].sum(1)  # share if users followed overall category popularity
    assert share.mean() > 3 * (3 / k)  # vs uniform over categories
    assert share.mean() > 1.5 * baseline.mean()


def test_collaborative_signal_beats_popularity(data):
    df, _ = data
    inter = from_frame(df)
    train, test = random_holdout(inter, 0.2, seed=0)
    x = train.to_csr()
    x.data[:] = 1.0
    seen = x.toarray() > 0
    relevant = relevant_items(test, exclude=train)
    pop = np.asarray(x.sum(axis=0)).ravel()

    def top10(scores):
        scores = np.where(seen, -np.inf, scores)
        return np.argsort(-scores, axis=1, kind="stable")[:, :10]

    norm = x.multiply(1 / np.sqrt(np.maximum(pop, 1))).tocsr()
    sim = (norm.T @ norm).toarray()
    np.fill_diagonal(sim, 0)
    knn = ndcg_at_k(top10(np.asarray(x @ sim)), relevant, 10)
    popular = ndcg_at_k(top10(np.tile(pop, (x.shape[0], 1))), relevant, 10)
    assert knn > 1.3 * popular


def test_write_and_load_back(tmp_path, data):
    df, catalog = data
    path = tmp_path / "out" / "interactions.tsv"
    write(df, path, catalog)
    header = path.read_text().split("\n", 1)[0]
    assert header == "user\titem\tevent\tweight\ttimestamp"
    loaded = load_interactions(path)
    expected = from_frame(df)
    assert loaded.to_frame().equals(expected.to_frame())
    assert loaded.user_ids.tolist() == expected.user_ids.tolist()
    back = load_catalog(path.with_name("catalog.tsv"))
    assert back.item_ids.tolist() == catalog.item_ids.tolist()
    assert back.titles.tolist() == catalog.titles.tolist()
    assert back.categories == catalog.categories


def test_default_size():
    # How long it takes is a benchmark's business, not a test's.
    df, catalog = generate()
    assert df.height == 500_000 and len(catalog) == 5_000

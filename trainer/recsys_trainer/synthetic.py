"""Seeded synthetic behaviour logs for an online store selling media and home goods.

The model behind `generate`:

* Items: one primary category each (category sizes vary), a base popularity with a long tail
  (log-normal, or Zipf over the same ranking for the large `SIZES` presets), a popularity
  trend over the period (log-linear, up or down) and, for some, a launch
  date mid-period. Some items also carry a secondary category in the catalog.
* Users: log-normal activity (long tail), a sparse Dirichlet taste over categories, and latent
  factors shared with the items. An item's appeal to a user is popularity x exp(affinity),
  where affinity = user factors . item factors: collaborative filtering can find that signal,
  popularity and category alone cannot.
* Views: a category from the user's taste (or, sometimes, from overall popularity), a few
  candidate items from that category by popularity, the one with the best noisy affinity
  (Gumbel-max). Its time follows the item's trend, within its lifetime.
* Funnel: clicks are a subset of views, carts of clicks, purchases of carts, each chosen with
  probability rising with affinity and timed shortly after its parent event, so every purchase
  follows a view of the same item by the same user.

The three parts draw from independent seed streams, so e.g. the catalog does not depend on
``n_users`` or ``n_interactions``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from recsys_core.catalog import Catalog
from recsys_core.data import EventWeights

START = 1_704_067_200  # 2024-01-01T00:00:00Z
EVENTS = ("view", "click", "add_to_cart", "purchase")
# Share of all events per type (views are the rest).
EVENT_SHARES = {"click": 0.17, "add_to_cart": 0.05, "purchase": 0.03}
# Mean delay in seconds from the parent event (view -> click -> cart -> purchase).
FUNNEL_DELAYS = (30.0, 120.0, 600.0)

NOUNS: dict[str, tuple[str, ...]] = {
    "Sci-Fi": ("Starship", "Nebula", "Android", "Colony", "Singularity", "Orbit"),
    "Fantasy": ("Dragon", "Kingdom", "Sorcerer", "Crown", "Prophecy", "Forest"),
    "Mystery": ("Alibi", "Inspector", "Cipher", "Manor", "Secret", "Witness"),
    "Thriller": ("Conspiracy", "Hostage", "Agent", "Deadline", "Escape", "Target"),
    "Romance": ("Summer", "Letters", "Promise", "Heart", "Wedding", "Sonnet"),
    "Comedy": ("Mix-Up", "Roommates", "Vacation", "Misfits", "Party", "Blunder"),
    "Documentary": ("Planet", "Ocean", "Empire", "Voyage", "Frontier", "Revolution"),
    "Kids": ("Puppy", "Rainbow", "Robot", "Adventure", "Dinosaur", "Friends"),
    "Cookbooks": ("Kitchen Table", "Bread", "Spices", "Pasta", "Feast", "Baking"),
    "Kitchen": ("Chef's Knife", "Skillet", "Blender", "Kettle", "Cutting Board", "Dutch Oven"),
    "Garden": ("Planter", "Pruner", "Hose", "Trowel", "Seed Kit", "Watering Can"),
    "Outdoor": ("Tent", "Backpack", "Lantern", "Hammock", "Sleeping Bag", "Cooler"),
    "Fitness": ("Yoga Mat", "Dumbbells", "Kettlebell", "Jump Rope", "Foam Roller", "Bands"),
    "Electronics": ("Headphones", "Charger", "Speaker", "Webcam", "Keyboard", "Monitor"),
    "Gaming": ("Controller", "Quest", "Arena", "Racer", "Headset", "Legends"),
    "Music": ("Ballads", "Sessions", "Anthems", "Live Album", "Grooves", "Symphony"),
    "Travel": ("Guide", "Suitcase", "Atlas", "Phrasebook", "Passport Case", "Pillow"),
    "Beauty": ("Serum", "Palette", "Moisturizer", "Lip Balm", "Perfume", "Brush Set"),
    "Toys": ("Puzzle", "Building Set", "Plush Bear", "Race Track", "Doll House", "Kite"),
    "Office": ("Notebook", "Desk Lamp", "Planner", "Pen Set", "Organizer", "Chair"),
}
CATEGORIES = tuple(NOUNS)
ADJECTIVES = (
    "Silent", "Golden", "Classic", "Wild", "Little", "Modern", "Midnight", "Bright", "Hidden",
    "Urban", "Lucky", "Cosmic", "Gentle", "Bold", "Crimson", "Northern", "Everyday", "Compact",
    "Deluxe", "Vintage", "Electric", "Quiet", "Rustic", "Brave",
)  # fmt: skip
EDITIONS = ("", "", "", "", "II", "Pro", "Mini", "Collection", "Deluxe Edition", "Set")
POPULARITY = ("lognormal", "zipf")

SIZES: dict[str, tuple[int, int, int]] = {
    "1M": (200_000, 1_000_000, 5_000_000),
    "10M": (1_000_000, 10_000_000, 20_000_000),
}
"""Large-catalogue presets (``recsys-train generate --size``): users, items, interactions.
A few interactions per item on average, so most items have one or none, as in a real shop's
catalogue; they use Zipf popularity (``zipf_exponent`` 1)."""


def _trend_mass(slope: np.ndarray, launch: np.ndarray) -> np.ndarray:
    """Integral of exp(slope * (t - 0.5)) over the item's lifetime [launch, 1]."""
    small = np.abs(slope) < 1e-9
    s = np.where(small, 1.0, slope)
    full = np.exp(s * (launch - 0.5)) * np.expm1(s * (1.0 - launch)) / s
    return np.where(small, 1.0 - launch, full)


def _trend_times(slope: np.ndarray, launch: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws in [launch, 1] from the density proportional to exp(slope * t)."""
    small = np.abs(slope) < 1e-9
    s = np.where(small, 1.0, slope)
    t = launch + np.log1p(u * np.expm1(s * (1.0 - launch))) / s
    t = np.where(small, launch + u * (1.0 - launch), t)
    return np.clip(t, launch, 1.0)


def _rowwise_choice(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each r, a column drawn from row ``rows[r]`` of a row-wise CDF ``cum`` (last col 1).

    Offsetting row i's CDF by i makes the flattened CDF increasing, so one searchsorted draws
    from every row's distribution at once.
    """
    n_rows, k = cum.shape
    flat = (cum + np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + u, side="right") - rows * k
    return np.minimum(pos, k - 1)


def _weighted_subset(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """k distinct positions drawn with probability proportional to weight (sorted).

    Exponential keys divided by the weight, smallest k: weighted sampling without replacement.
    """
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    keys = rng.exponential(size=len(weights)) / weights
    return np.sort(np.argpartition(keys, k - 1)[:k])


def _titles(rng: np.random.Generator, item_cat: np.ndarray) -> list[str]:
    adj = rng.integers(len(ADJECTIVES), size=len(item_cat))
    noun = rng.integers(6, size=len(item_cat))
    edition = rng.integers(len(EDITIONS), size=len(item_cat))
    titles = []
    for c, a, n, e in zip(
        item_cat.tolist(), adj.tolist(), noun.tolist(), edition.tolist(), strict=True
    ):
        words = [ADJECTIVES[a], NOUNS[CATEGORIES[c]][n], EDITIONS[e]]
        titles.append(" ".join(w for w in words if w))
    return titles


def _labels(prefix: str, n: int) -> np.ndarray:
    # Zero-padded so that lexicographic order equals index order.
    width = len(str(max(n - 1, 0)))
    return np.asarray([f"{prefix}{i:0{width}d}" for i in range(n)])


def generate(
    n_users: int = 10_000,
    n_items: int = 5_000,
    n_interactions: int = 500_000,
    seed: int = 42,
    *,
    n_categories: int = 20,
    n_factors: int = 16,
    weeks: int = 8,
    start: int = START,
    candidates: int = 8,
    explore: float = 0.1,
    taste_concentration: float = 0.2,
    affinity_scale: float = 2.0,
    launch_share: float = 0.15,
    popularity: str = "lognormal",
    zipf_exponent: float = 1.0,
) -> tuple[pl.DataFrame, Catalog]:
    """Synthetic interactions and their catalog, exactly reproducible for a given seed.

    Returns a DataFrame with columns user, item, event, weight, timestamp (exactly
    ``n_interactions`` rows, sorted by time; users "u00042", items "i0042") and a `Catalog` of
    all ``n_items`` items. Weights follow `EventWeights` defaults. ``taste_concentration`` is
    the Dirichlet parameter per category (smaller: users stick to fewer categories);
    ``affinity_scale`` scales the latent-factor affinity (0: users differ only in category taste).
    ``popularity="zipf"`` gives the item ranked r by the log-normal draw base popularity
    r^-``zipf_exponent`` instead: the same order, a heavier head and a longer tail.
    """
    if popularity not in POPULARITY:
        raise ValueError(f"popularity must be one of {', '.join(POPULARITY)}, got {popularity!r}")
    if not 1 <= n_categories <= len(CATEGORIES):
        raise ValueError(f"n_categories must be in 1..{len(CATEGORIES)}")
    if n_items < n_categories or n_users < 1 or n_interactions < 0:
        raise ValueError("need n_items >= n_categories, n_users >= 1, n_interactions >= 0")
    item_rng, user_rng, event_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    k, d = n_categories, n_factors

    # Items. Every category gets at least one item so taste draws always find one.
    cat_share = item_rng.dirichlet(np.full(k, 4.0))
    item_cat = np.concatenate([np.arange(k), item_rng.choice(k, n_items - k, p=cat_share)])
    item_rng.shuffle(item_cat)
    base = item_rng.lognormal(0.0, 1.6, n_items)
    if popularity == "zipf":
        # re-valued by rank, so no extra draws: every other item attribute stays the same
        rank = np.empty(n_items, np.float64)
        rank[np.argsort(-base, kind="stable")] = np.arange(1, n_items + 1)
        base = rank**-zipf_exponent
    slope = item_rng.normal(0.0, 1.5, n_items)
    launched = item_rng.random(n_items) < launch_share
    launch = np.where(launched, item_rng.uniform(0.1, 0.8, n_items), 0.0)
    mass = base * _trend_mass(slope, launch)
    item_f = (item_rng.normal(size=(n_items, d)) / d**0.25).astype(np.float32)
    second = item_rng.choice(k, n_items, p=cat_share)
    has_second = (item_rng.random(n_items) < 0.25) & (second != item_cat)
    titles = _titles(item_rng, item_cat)

    # Users.
    activity = user_rng.lognormal(0.0, 1.0, n_users)
    taste = user_rng.gamma(taste_concentration, size=(n_users, k)) + 1e-12
    taste_cum = np.cumsum(taste / taste.sum(axis=1, keepdims=True), axis=1)
    taste_cum[:, -1] = 1.0
    user_f = (user_rng.normal(size=(n_users, d)) / d**0.25 * affinity_scale).astype(np.float32)

    # Event counts: fixed shares of the total, views take the rest.
    n_purchase = round(n_interactions * EVENT_SHARES["purchase"])
    n_cart = round(n_interactions * EVENT_SHARES["add_to_cart"])
    n_click = round(n_interactions * EVENT_SHARES["click"])
    n_view = n_interactions - n_click - n_cart - n_purchase

    # Views: who, which category, which item, when.
    rng = event_rng
    view_user = np.repeat(np.arange(n_users), rng.multinomial(n_view, activity / activity.sum()))
    view_cat = _rowwise_choice(taste_cum, view_user, rng.random(n_view))
    cat_mass = np.bincount(item_cat, weights=mass, minlength=k)
    exploring = rng.random(n_view) < explore
    view_cat[exploring] = rng.choice(k, int(exploring.sum()), p=cat_mass / cat_mass.sum())

    by_cat = np.argsort(item_cat, kind="stable")
    cum = np.cumsum(mass[by_cat])
    cat_end = np.cumsum(np.bincount(item_cat, minlength=k))
    cat_begin = cat_end - np.bincount(item_cat, minlength=k)
    cum_before = np.concatenate([[0.0], cum])[cat_begin]

    view_item = np.empty(n_view, dtype=np.int64)
    view_aff = np.empty(n_view, dtype=np.float32)
    chunk = 1 << 18  # bounds memory: chunk x candidates x factors floats
    for lo in range(0, n_view, chunk):
        hi = min(lo + chunk, n_view)
        c = view_cat[lo:hi]
        x = cum_before[c][:, None] + rng.random((hi - lo, candidates)) * cat_mass[c][:, None]
        pos = np.searchsorted(cum, x, side="right")
        pos = np.clip(pos, cat_begin[c][:, None], cat_end[c][:, None] - 1)
        cand = by_cat[pos]
        aff = np.einsum("vd,vcd->vc", user_f[view_user[lo:hi]], item_f[cand])
        pick = np.argmax(aff + rng.gumbel(size=aff.shape), axis=1)
        rows = np.arange(hi - lo)
        view_item[lo:hi] = cand[rows, pick]
        view_aff[lo:hi] = aff[rows, pick]

    t = _trend_times(slope[view_item], launch[view_item], rng.random(n_view))
    span = weeks * 7 * 86_400
    view_ts = start + np.minimum(np.floor(t * span), span - 1).astype(np.int64)

    # Funnel: each stage a weighted subset of the previous one, a little later.
    users, items, stamps, codes = [view_user], [view_item], [view_ts], [np.zeros(n_view, np.int8)]
    parent_user, parent_item, parent_ts, parent_aff = view_user, view_item, view_ts, view_aff
    for code, (count, delay) in enumerate(
        zip((n_click, n_cart, n_purchase), FUNNEL_DELAYS, strict=True), 1
    ):
        sel = _weighted_subset(rng, np.exp(parent_aff.astype(np.float64)), count)
        lag = 1 + np.floor(rng.exponential(delay, len(sel))).astype(np.int64)
        parent_user, parent_item = parent_user[sel], parent_item[sel]
        parent_ts, parent_aff = parent_ts[sel] + lag, parent_aff[sel]
        users.append(parent_user)
        items.append(parent_item)
        stamps.append(parent_ts)
        codes.append(np.full(len(sel), code, np.int8))

    user = np.concatenate(users)
    item = np.concatenate(items)
    ts = np.concatenate(stamps)
    code = np.concatenate(codes)
    order = np.lexsort((code, item, user, ts))
    user, item, ts, code = user[order], item[order], ts[order], code[order]

    table = EventWeights().normalized()
    event_weight = np.asarray([table[e] for e in EVENTS], dtype=np.float32)
    df = pl.DataFrame(
        {
            "user": pl.Series(_labels("u", n_users)).gather(user),
            "item": pl.Series(_labels("i", n_items)).gather(item),
            "event": pl.Series(EVENTS).gather(code),
            "weight": event_weight[code],
            "timestamp": ts,
        }
    )

    names = CATEGORIES[:k]
    cats = tuple(
        (names[c], names[s]) if two else (names[c],)
        for c, s, two in zip(item_cat.tolist(), second.tolist(), has_second.tolist(), strict=True)
    )
    catalog = Catalog(_labels("i", n_items), np.asarray(titles), cats, names)
    return df, catalog


def write(df: pl.DataFrame, path: str | Path, catalog: Catalog | None = None) -> None:
    """Write interactions as TSV (header ``user item event weight timestamp``) and, when given,
    the catalog as ``catalog.tsv`` (header ``item title categories``) in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = df.select("user", "item", "event", "weight", "timestamp")
    cols.write_csv(path, separator="\t", quote_style="never")
    if catalog is not None:
        catalog.to_frame().write_csv(
            path.with_name("catalog.tsv"), separator="\t", quote_style="never"
        )


def write_partitions(
    df: pl.DataFrame, directory: str | Path, partitions: int, catalog: Catalog | None = None
) -> list[Path]:
    """Interactions as ``partitions`` Parquet files ``part-00000.parquet``... in
    ``directory`` (each user's rows in one file, chosen by a hash of the id, rows in their
    original order), and the catalog as ``catalog.tsv`` beside them."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cols = df.select("user", "item", "event", "weight", "timestamp")
    part = cols["user"].hash(seed=0) % partitions
    paths = []
    for n in range(partitions):
        path = d / f"part-{n:05d}.parquet"
        cols.filter(part == n).write_parquet(path)
        paths.append(path)
    if catalog is not None:
        catalog.to_frame().write_csv(d / "catalog.tsv", separator="\t", quote_style="never")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic data set as TSV files.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--interactions", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    df, catalog = generate(args.users, args.items, args.interactions, args.seed)
    write(df, args.out_dir / "interactions.tsv", catalog)


if __name__ == "__main__":
    main()

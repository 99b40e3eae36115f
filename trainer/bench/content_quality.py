"""The content model in docs/quality.md: alone, as a hybrid component, and on cold items.

Same data and protocol as ``quality.py`` (users with >= 5 interactions, ``random_holdout(inter,
0.2, seed=42)``, top 10, ``evaluate.compare``, ``cli.fit_models`` with the default
configuration), on the data sets that have a catalogue: MovieLens 100k with its ``u.item`` and
the synthetic set with its generated catalogue (Steam has none, so the trainer leaves content
out there). Three fits per data set:

* with the catalogue attached (``with_catalog``): content alone and the hybrid with it;
* the same training data without it: the hybrid without content (the trainer's behaviour on a
  data set with no catalogue), so the two hybrids differ only in the content component;
* cold items: all interactions of a seeded 10% of the items removed from training, then per
  user with such an item in their data (train or test part): recall@20 of those items among
  all items, the share of them that reach any user's top 20, and NDCG@10 / recall@10 when
  ranking only the cold items, against a random order of them (recall 10 / n_cold).

The section is written between the markers below in ``--out`` (docs/quality.md), leaving the
rest of the file as it is; ``quality.py`` keeps the section when it rewrites the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

TRAINER = Path(__file__).resolve().parents[1]
if str(TRAINER) not in sys.path:
    sys.path.insert(0, str(TRAINER))
sys.path.insert(0, str(TRAINER / "bench"))

import quality  # noqa: E402
import sections  # noqa: E402

from recsys_core.catalog import Catalog, load_catalog, with_catalog  # noqa: E402
from recsys_core.data import Interactions, load_interactions  # noqa: E402
from recsys_core.metrics import ndcg_at_k  # noqa: E402
from recsys_core.splits import filter_min_interactions, random_holdout  # noqa: E402
from recsys_trainer import cli  # noqa: E402
from recsys_trainer import config as config_mod  # noqa: E402
from recsys_trainer.evaluate import compare  # noqa: E402

BEGIN, END = sections.markers("content", "trainer/bench/content_quality.py")
K, MIN_USER, TEST_SEED, COLD_SEED, COLD_SHARE, COLD_K = 10, 5, 42, 3, 0.1, 20
COLD_MODELS = ("content", "hybrid", "item_cf", "svd", "ease", "popularity")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ml100k(path: Path) -> tuple[str, Interactions, Catalog]:
    inter = filter_min_interactions(load_interactions(path), min_user=MIN_USER, min_item=1)
    return "MovieLens 100k + u.item", inter, load_catalog(path.with_name("u.item"))


def synthetic(quick: bool) -> tuple[str, Interactions, Catalog]:
    return quality.synthetic_set(quick)


def fit(train: Interactions) -> tuple[dict, float]:
    t0 = time.perf_counter()
    models = cli.fit_models(train, config_mod.load(), cli.ALL)
    return models, time.perf_counter() - t0


class Fitted:
    def __init__(self, model) -> None:
        self.model = model

    def fit(self, train):
        return self

    def recommend(self, *args, **kwargs):
        return self.model.recommend(*args, **kwargs)

    def params(self):
        return self.model.params()


def accuracy_rows(title: str, inter: Interactions, catalog: Catalog) -> dict:
    data = with_catalog(inter, catalog)
    train, test = random_holdout(data, 0.2, seed=TEST_SEED)
    say(f"{title}: fit with the catalogue")
    with_c, t_with = fit(train)
    say(f"{title}: fit without it")
    without, t_without = fit(dataclasses.replace(train, catalog=None))
    models = {
        "content": Fitted(with_c["content"]),
        "hybrid + content": Fitted(with_c["hybrid"]),
        "hybrid, no content": Fitted(without["hybrid"]),
    }
    feats = catalog.category_matrix(data.item_ids)
    report = compare(models, train, test, k=K, item_features=feats, dataset=title, progress=say)
    return {
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_cold_in_index": data.n_items - inter.n_items,
        "metrics": report.metrics,
        "weights": (with_c["hybrid"].weights_, without["hybrid"].weights_),
        "seconds": (t_with, t_without),
    }


def cold_rows(title: str, inter: Interactions, catalog: Catalog) -> dict:
    data = with_catalog(inter, catalog)
    warm = np.unique(inter.item_idx)
    rng = np.random.default_rng(COLD_SEED)
    cold = np.sort(rng.choice(warm, round(COLD_SHARE * len(warm)), replace=False))
    is_cold = np.isin(data.item_idx, cold)
    train = data.take(~is_cold)
    say(f"{title}: fit without the interactions of {len(cold)} items")
    models, _ = fit(train)
    rows = data.take(is_cold)
    users = np.unique(rows.user_idx)
    rel = [np.unique(rows.item_idx[rows.user_idx == u]) for u in users]
    history = train.to_csr()[users]
    out = {"n_cold": len(cold), "n_users": len(users), "rows": len(rows), "models": {}}
    for name in COLD_MODELS:
        m = models.get(name)
        if m is None:
            continue
        top = m.recommend(users, history, COLD_K)
        lists = [top.user(i).items for i in range(len(users))]
        recall = np.mean(
            [len(np.intersect1d(r, li)) / len(r) for r, li in zip(rel, lists, strict=True)]
        )
        reached = len(np.intersect1d(np.concatenate(lists), cold)) / len(cold)
        only = m.recommend(users, history, K, allow=cold)
        only_lists = [only.user(i).items for i in range(len(users))]
        only_recall = np.mean(
            [
                len(np.intersect1d(r, li)) / min(len(r), K)
                for r, li in zip(rel, only_lists, strict=True)
            ]
        )
        out["models"][name] = {
            "recall20": float(recall),
            "reached": float(reached),
            "ndcg_cold": float(ndcg_at_k(only_lists, rel, K)),
            "recall_cold": float(only_recall),
        }
    # a random order of the cold items: len(r) * K / n_cold expected hits in the top K
    rand = [min(len(r) * K / len(cold), min(len(r), K)) / min(len(r), K) for r in rel]
    out["random_recall_cold"] = float(np.mean(rand))
    return out


def render(command: str, results: list[tuple[str, dict, dict]]) -> str:
    lines = [
        BEGIN,
        "## Content model",
        "",
        "Generated by `trainer/bench/content_quality.py` (this section only; rerun it).",
        "",
        f"- **Command**: `{command}`",
        f"- **Date**: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "- Protocol as above (users >= 5 interactions, `random_holdout(0.2, seed=42)`, top 10, "
        "`evaluate.compare`, `cli.fit_models` with the default configuration, its tuning "
        "included). The catalogue is attached with `with_catalog`, which also puts catalogue "
        "items nobody interacted with in the item index. *Hybrid, no content* is the same "
        "training data without the catalogue, i.e. what the trainer fits on a data set without "
        "one (Steam: content is left out there, so the tables above are unchanged).",
        "- Cold items: all interactions of a seeded 10% of the items with interactions "
        "removed from training; evaluated for every user who has such an item anywhere in the "
        "data. *R@20 all*: recall of those items in the top 20 over all items; *reached*: share "
        "of the cold items in at least one top 20; *NDCG@10 / R@10 cold only*: ranking only the "
        "cold items (R@10 normalised by min(relevant, 10)); a random order of them reaches "
        "the R@10 shown as *random*. A model that scores every cold item 0 returns them in "
        "index order, which is what its cold-only row measures.",
        "",
    ]
    for title, acc, cold in results:
        lines += [f"### {title}", ""]
        lines.append(
            f"{acc['n_users']} users, {acc['n_items']} items in the index "
            f"({acc['n_cold_in_index']} of them catalogue items with no interaction). "
            f"Training time {acc['seconds'][0]:.1f} s with the catalogue, "
            f"{acc['seconds'][1]:.1f} s without."
        )
        lines += [
            "",
            "| Model | NDCG@10 | R@10 | P@10 | MAP@10 | Coverage@10 | ILD@10 |",
            "|:---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in acc["metrics"].items():
            lines.append(
                f"| {name} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | "
                f"{m['precision@10']:.4f} | {m['map@10']:.4f} | {m['coverage@10']:.3f} | "
                f"{m.get('diversity@10', math.nan):.3f} |"
            )
        wc, wn = acc["weights"]
        a = acc["metrics"]["hybrid + content"]["ndcg@10"]
        b = acc["metrics"]["hybrid, no content"]["ndcg@10"]
        lines += [
            "",
            f"- Hybrid with / without content, NDCG@10: **{a / b:.3f}**.",
            "- Tuned weights with content: "
            + ", ".join(f"{n}={v:g}" for n, v in sorted(wc.items())),
            "- Tuned weights without: " + ", ".join(f"{n}={v:g}" for n, v in sorted(wn.items())),
            "",
            f"Cold items: {cold['n_cold']} items, their {cold['rows']} interactions held out, "
            f"{cold['n_users']} users evaluated; random order R@10 cold only: "
            f"{cold['random_recall_cold']:.4f}.",
            "",
            "| Model | R@20 all | reached | NDCG@10 cold only | R@10 cold only | × random |",
            "|:---|---:|---:|---:|---:|---:|",
        ]
        for name, m in cold["models"].items():
            ratio = m["recall_cold"] / cold["random_recall_cold"]
            lines.append(
                f"| {name} | {m['recall20']:.4f} | {m['reached']:.3f} | {m['ndcg_cold']:.4f} | "
                f"{m['recall_cold']:.4f} | {ratio:.2f} |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ml100k", type=Path, help="MovieLens 100k u.data (u.item beside it)")
    p.add_argument("--quick", action="store_true", help="the small synthetic set")
    p.add_argument("--out", type=Path, default=TRAINER.parent / "docs" / "quality.md")
    args = p.parse_args(argv)
    sets = []
    if args.ml100k:
        if not args.ml100k.with_name("u.item").exists():
            raise SystemExit(f"no u.item beside {args.ml100k}")
        sets.append(ml100k(args.ml100k))
    sets.append(synthetic(args.quick))
    results = [(t, accuracy_rows(t, i, c), cold_rows(t, i, c)) for t, i, c in sets]
    command = "python trainer/bench/content_quality.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(sections.splice(old, "content", render(command, results)))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

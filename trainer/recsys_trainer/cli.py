"""``recsys-train``: generate, train, evaluate, recommend (and, later, refresh)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm import tqdm

from recsys_core.catalog import Catalog, load_catalog, with_catalog
from recsys_core.data import (
    ColumnMap,
    DataError,
    EventWeights,
    Format,
    Interactions,
    from_frame,
    load_interactions,
)
from recsys_core.models import MODELS, Hybrid, Recommender
from recsys_core.models.registry import COMPONENTS, NAMES
from recsys_core.splits import leave_last_n, random_holdout, temporal_split
from recsys_trainer import calibrate, live_catalogue, retention, synthetic, tuning
from recsys_trainer import config as config_mod
from recsys_trainer import engine as engine_mod
from recsys_trainer.engine import Engine

LOCAL = Engine()

ALL = NAMES


@contextmanager
def step(label: str) -> Iterator[tqdm]:
    """A one-step progress bar: shows the label while running and the time when done."""
    bar = tqdm(
        total=1, desc=label, leave=True, file=sys.stderr, bar_format="{desc}: {elapsed}{postfix}"
    )
    try:
        yield bar
        bar.update(1)
    finally:
        bar.close()


def partitions(path: Path) -> list[Path] | None:
    """The Parquet partitions ``path`` names: a directory's ``*.parquet`` files or a glob's
    matches, sorted; None for a single file."""
    text = str(path)
    if path.is_dir():
        found = sorted(path.glob("*.parquet"))
    elif any(c in text for c in "*?["):
        found = sorted(Path(p) for p in __import__("glob").glob(text))
    else:
        return None
    if not found:
        raise FileNotFoundError(text if not path.is_dir() else f"{text}/*.parquet")
    return found


def load_data(path: Path, cfg: config_mod.TrainConfig, engine: Engine = LOCAL) -> Interactions:
    parts = partitions(path)
    if parts is not None:
        # each partition read where the engine runs its blocks, the frames joined in order
        with step(f"load {len(parts)} partitions of {path}"):
            frames = engine.map(engine_mod.read_partition, [str(p) for p in parts])
            try:
                df = pl.concat(frames, how="vertical_relaxed")
            except pl.exceptions.PolarsError as e:
                raise DataError(path, None, None, f"partitions do not match: {e}") from e
            return from_frame(df, cfg.data.columns, cfg.data.event_weights, source=path)
    with step(f"load {path.name}"):
        return load_interactions(
            path,
            format=cfg.data.format,
            columns=cfg.data.columns,
            event_weights=cfg.data.event_weights,
        )


# Catalogue files looked for beside the interactions when --catalog is not given: ours, then
# MovieLens's (ml-latest, ML-1M/10M, ML-100k).
CATALOG_NAMES = ("catalog.tsv", "movies.csv", "movies.dat", "u.item")


def load_catalog_for(path: Path | None, interactions: Path) -> Catalog | None:
    if path is not None:
        return load_catalog(path)
    for name in CATALOG_NAMES:
        # beside the log, or inside a directory of partitions
        guess = interactions / name if interactions.is_dir() else interactions.with_name(name)
        if guess.exists():
            return load_catalog(guess)
    return None


def tune_models(
    inter: Interactions,
    cfg: config_mod.TrainConfig,
    names: tuple[str, ...],
    engine: Engine = LOCAL,
) -> tuple[config_mod.TrainConfig, dict[str, dict], tuple | None]:
    """The configuration with each model's hyperparameters searched on a validation split of
    ``inter`` (see ``recsys_trainer.tuning``), what each search tried, and the models it left
    fitted on the split (for a hybrid to tune its weights on). Returned with tuning switched
    off, so fitting with it again does not search again."""
    if not cfg.tuning.enabled:
        return cfg, {}, None
    need = needed(names, cfg, inter)
    configs = {n: getattr(cfg.models, n) for n in need}
    with step(f"tune {', '.join(need)}") as bar:
        tuned, records, val = tuning.tune(
            inter, configs, cfg.tuning, log=bar.set_postfix_str, engine=engine
        )
    models = dataclasses.replace(cfg.models, **tuned)
    off = dataclasses.replace(cfg.tuning, enabled=False)
    return (
        dataclasses.replace(cfg, models=models, tuning=off),
        {n: r.record() for n, r in records.items()},
        tuning.prefit(val, records),
    )


def fit_models(
    inter: Interactions,
    cfg: config_mod.TrainConfig,
    names: tuple[str, ...],
    tuned: dict[str, dict] | None = None,
    engine: Engine = LOCAL,
) -> dict[str, Recommender]:
    """Tunes (unless ``cfg.tuning`` is off), then fits each model once (a hybrid's components
    included) with a progress line each. ``tuned``: records of an earlier search whose
    results ``cfg`` already holds, kept with the models. ``engine``: where the tuning trials
    and the fits' kernels run (``recsys_trainer.engine``)."""
    cfg, records, val = tune_models(inter, cfg, names, engine)
    models = build_models(cfg, names, records or tuned, val, inter, engine)
    for name, model in models.items():
        with step(f"fit {name}" + (" (tune weights)" if name == "hybrid" else "")):
            model.fit(inter)
    return models


def split(inter: Interactions, cfg: config_mod.EvalConfig) -> tuple[Interactions, Interactions]:
    if cfg.split == "random":
        return random_holdout(inter, cfg.test_fraction, seed=cfg.seed)
    if cfg.split == "temporal":
        return temporal_split(inter, cfg.test_fraction)
    if cfg.split == "leave_last":
        return leave_last_n(inter, 1)
    raise config_mod.ConfigError(
        f"evaluation.split must be random, temporal or leave_last, got {cfg.split!r}"
    )


def overrides(a: argparse.Namespace) -> list[str]:
    """--set values plus the data and tuning flags, as configuration overrides."""
    out = list(a.set)
    if getattr(a, "no_tune", False):
        out.append("tuning.enabled=false")
    if getattr(a, "tune_budget", None) is not None:
        out.append(f"tuning.budget_seconds={a.tune_budget}")
    if getattr(a, "retention", None):
        out.append(f"retention.window={json.dumps(a.retention)}")
    if getattr(a, "archive", None):
        out.append(f"retention.archive={json.dumps(a.archive)}")
    if getattr(a, "format", None):
        out.append(f"data.format={json.dumps(a.format)}")
    for col in ("user", "item", "weight", "event", "timestamp"):
        name = getattr(a, f"{col}_col", None)
        if name:  # a number is a 1-based position
            value = int(name) if name.strip().isdigit() else json.dumps(name)
            out.append(f"data.columns.{col}={value}")
    if getattr(a, "event_weights", None):
        pairs = []
        for part in a.event_weights.split(","):
            key, sep, value = part.partition("=")
            try:
                weight = float(value)
            except ValueError:
                weight = None
            if not sep or not key.strip() or weight is None:
                raise config_mod.ConfigError(
                    f"--event-weights {a.event_weights!r}: expected TYPE=WEIGHT,... "
                    f"(bad part {part!r})"
                )
            pairs.append(f"{json.dumps(key.strip())} = {weight}")
        out.append("data.event_weights.weights={" + ", ".join(pairs) + "}")
    return out


def parse_models(value: str | None) -> tuple[str, ...]:
    if not value:
        return ALL
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in MODELS]
    if bad:
        raise SystemExit(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(ALL)}")
    return names


def generate_shape(a: argparse.Namespace) -> tuple[int, int, int, str]:
    """Users, items, interactions and popularity model: ``--size``'s preset (Zipf
    popularity), each count overridable by its own flag, else the small default set."""
    users, items, n = synthetic.SIZES.get(a.size, (10_000, 5_000, 500_000))
    return (
        a.users if a.users is not None else users,
        a.items if a.items is not None else items,
        a.interactions if a.interactions is not None else n,
        "zipf" if a.size else "lognormal",
    )


def cmd_generate(a: argparse.Namespace) -> int:
    users, items, n, popularity = generate_shape(a)
    with step(f"generate {n:,} interactions ({users:,} users, {items:,} items)"):
        df, catalog = synthetic.generate(users, items, n, a.seed, popularity=popularity)
    with step(f"write {a.out}"):
        if a.format == "parquet":
            paths = synthetic.write_partitions(df, a.out, a.partitions, catalog)
            print(f"wrote {len(paths)} Parquet partitions and catalog.tsv to {a.out}")
            return 0
        synthetic.write(df, a.out, catalog)
    print(f"wrote {a.out} and {Path(a.out).with_name('catalog.tsv')}")
    return 0


def needed(
    names: tuple[str, ...], cfg: config_mod.TrainConfig, data: Interactions | None = None
) -> list[str]:
    """``names`` plus a hybrid's components, in fitting order; with ``data``, a model that
    cannot fit it (EASE on a catalogue above its ``max_items``) is left out (``check_fits``
    refuses one the user named)."""
    need = set(names) | (set(COMPONENTS) if "hybrid" in names else set())
    return [n for n in ALL if n in need and (data is None or fits(n, cfg, data))]


def unfit_reason(name: str, cfg: config_mod.TrainConfig, data: Interactions) -> str | None:
    if name == "hybrid":
        return None
    return MODELS[name](getattr(cfg.models, name)).unfit_reason(data)


def fits(name: str, cfg: config_mod.TrainConfig, data: Interactions) -> bool:
    return unfit_reason(name, cfg, data) is None


def check_fits(a: argparse.Namespace, names, cfg: config_mod.TrainConfig, data) -> dict:
    """Models named with ``--models`` that cannot fit ``data`` are an error; the others are
    left out with a note on stderr (content without a catalogue, EASE or the neighbour models
    above their max_items) and returned, name -> reason, for the manifest and the report."""
    need = set(names) | (set(COMPONENTS) if "hybrid" in names else set())
    left_out = {}
    for n in ALL:
        reason = unfit_reason(n, cfg, data) if n in need else None
        if reason is None:
            continue
        if a.models and n in names:
            raise config_mod.ConfigError(f"model {n}: {reason}")
        print(f"note: {n} left out: {reason}", file=sys.stderr)
        left_out[n] = reason
    return left_out


def build_models(
    cfg: config_mod.TrainConfig,
    names: tuple[str, ...],
    tuned: dict[str, dict] | None = None,
    prefit: tuple | None = None,
    data: Interactions | None = None,
    engine: Engine = LOCAL,
) -> dict[str, Recommender]:
    """Unfitted models in fitting order; a hybrid shares the component instances, so fitting
    the components first leaves the hybrid only its weights to tune (on ``prefit``, the
    search's validation models, when given). ``tuned`` records go into each model's
    parameters (the manifest, the report, ListModels)."""
    models: dict[str, Recommender] = {
        n: engine.attach(MODELS[n](getattr(cfg.models, n)))
        for n in needed(names, cfg, data)
        if n != "hybrid"
    }
    if "hybrid" in names:
        models["hybrid"] = Hybrid(cfg.models.hybrid, components=dict(models), fit_components=False)
        models["hybrid"].prefit = prefit
    for name, record in (tuned or {}).items():
        if name in models:
            models[name].tuning_ = record
    return models


def evaluate_models(inter: Interactions, cfg, names, catalog, dataset: str, engine: Engine = LOCAL):
    """The holdout report, and the configuration tuned on the training part of the split
    (with each search's records) for the final fit to reuse."""
    from recsys_trainer import evaluate

    train, test = split(inter, cfg.evaluation)
    cfg, records, val = tune_models(train, cfg, names, engine)
    models = build_models(cfg, names, records, val, train, engine)
    features = None if catalog is None else catalog.category_matrix(inter.item_ids)
    bar = tqdm(desc="evaluate", file=sys.stderr, bar_format="{desc}: {elapsed}{postfix}")
    try:
        report = evaluate.compare(
            models,
            train,
            test,
            k=cfg.evaluation.k,
            item_features=features,
            dataset=dataset,
            split=cfg.evaluation.split,
            seed=cfg.evaluation.seed,
            progress=lambda msg: bar.set_postfix_str(str(msg)[:60]),
            engine=engine,
        )
    finally:
        bar.close()
    hybrid = models.get("hybrid")
    if records and isinstance(hybrid, Hybrid) and cfg.models.hybrid.tune:
        # the final fit keeps the weights tuned here: the search is not repeated on all data
        fixed = dataclasses.replace(cfg.models.hybrid, weights=dict(hybrid.weights_), tune=False)
        cfg = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, hybrid=fixed))
    return report, cfg, records


def train_and_publish(
    inter: Interactions,
    cfg: config_mod.TrainConfig,
    names: tuple[str, ...],
    catalog: Catalog | None,
    out: Path,
    metrics: dict,
    extra_params: dict | None = None,
    tuned: dict[str, dict] | None = None,
    engine: Engine = LOCAL,
) -> tuple[Path, dict[str, Recommender], float]:
    """Fits the models on all of ``inter`` (tuning first unless ``cfg`` says it is done) and
    publishes them as a new version."""
    from recsys_core import artifacts

    t0 = time.perf_counter()
    models = fit_models(inter, cfg, names, tuned, engine)
    train_seconds = time.perf_counter() - t0
    with step("calibrate confidence"):
        calibrations = calibrate_models(inter, cfg, models)
    params = config_mod.to_dict(cfg) | {"train_seconds": train_seconds} | (extra_params or {})
    with step("publish"):
        path = artifacts.publish(
            models,
            out=out,
            user_ids=inter.user_ids,
            item_ids=inter.item_ids,
            catalog=catalog,
            data_fingerprint=artifacts.data_fingerprint(inter),
            metrics=metrics,
            params=params,
            keep=cfg.keep_versions,
            history=inter.to_csr(),
            calibrations=calibrations,
        )
    return path, models, train_seconds


def calibrate_models(inter: Interactions, cfg: config_mod.TrainConfig, models) -> dict:
    """Each model's confidence calibration (`recsys_trainer.calibrate`), on the validation
    split the hyperparameter search carves from ``inter`` (tuning on or off)."""
    val = tuning.Validation(inter, cfg.tuning)
    return calibrate.calibrate(models, val, lambda name, c: MODELS[name](c))


def check_reachable(address: str) -> None:
    """A HOST:PORT that accepts no connection is an error now: Ray itself waits minutes for
    a cluster that is not there. Other forms (``auto``, ``ray://…``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise config_mod.ConfigError(
            f"--ray-address {address!r}: no Ray cluster answers there ({e.strerror or e}); "
            "start one with `ray start --head`"
        ) from None


def open_engine(a: argparse.Namespace) -> Engine:
    """The engine ``--engine`` names (``--ray-address`` for Ray)."""
    name = getattr(a, "engine", "local")
    address = getattr(a, "ray_address", None)
    if name != "ray" and address:
        raise config_mod.ConfigError("--ray-address needs --engine ray")
    if name == "ray" and address:
        check_reachable(address)
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise config_mod.ConfigError(
                "--engine ray needs Ray: pip install 'recsys-trainer[ray]'"
            ) from None
    return engine_mod.make(name, getattr(a, "ray_address", None))


def cmd_train(a: argparse.Namespace) -> int:
    cfg = config_mod.load(a.config, overrides(a))
    names = parse_models(a.models)
    with open_engine(a) as engine:
        catalog = load_catalog_for(a.catalog, Path(a.interactions))
        inter = with_catalog(load_data(Path(a.interactions), cfg, engine), catalog)
        left_out = check_fits(a, names, cfg, inter)
        metrics, tuned = {}, None
        t0 = time.perf_counter()
        if not a.no_evaluate:
            # tuned once, on the evaluation's training part; the final fit reuses the choice
            report, cfg, tuned = evaluate_models(
                inter, cfg, names, catalog, Path(a.interactions).name, engine
            )
            metrics = report.metrics
        path, models, train_seconds = train_and_publish(
            inter,
            cfg,
            names,
            catalog,
            Path(a.out),
            metrics,
            {"left_out": left_out} if left_out else None,
            tuned=tuned,
            engine=engine,
        )
    print(
        f"published {path} ({', '.join(models)}) in {train_seconds:.1f} s of training, "
        f"{time.perf_counter() - t0:.1f} s in all"
        + ("" if engine.name == "local" else f" (engine {engine.name}, {engine.workers} workers)")
    )
    return 0


def parse_duration(text: str) -> float:
    """``--every``: a positive `config.duration_seconds`."""
    try:
        value = config_mod.duration_seconds(text)
    except ValueError:
        raise SystemExit(f"--every {text!r}: expected a duration such as 30s, 10m or 2h") from None
    if not value > 0:
        raise SystemExit(f"--every {text!r}: must be positive")
    return value


def _check_store_path(store_url: str) -> None:
    from recsys_core.datastore import parse_store_url

    parsed = parse_store_url(store_url)
    # Opening would create an empty database: a mistyped path must not train on nothing.
    if parsed.scheme == "sqlite" and not Path(parsed.path or "").is_file():
        raise config_mod.ConfigError(f"--store {parsed.redacted!r}: no such database file")


def stored_events(store_url: str, archive: Path | None) -> tuple[pl.DataFrame, int]:
    """Every event the store has held, in seq order: the hot table plus the archive's Parquet
    files, each event once (an interrupted retention run leaves some in both; the first by seq
    is kept: an id stored again after its event was archived is a retry); and the highest seq
    among all of them, duplicates included, so the server does not replay a dropped retry.

    The table is read before the archive: retention writes a file before it deletes its rows,
    so an event moved meanwhile is in one of the two reads, never in neither."""
    from recsys_core.datastore import StoreError, open_store

    try:
        _check_store_path(store_url)
        with open_store(store_url) as store:
            frame = store.events_frame()
    except StoreError as e:
        raise config_mod.ConfigError(f"--store: {e}") from e
    if archive is not None:
        try:
            archived = retention.read_archive(archive).drop("stored_at")
        except retention.RetentionError as e:
            raise config_mod.ConfigError(f"archive: {e}") from e
        frame = pl.concat([archived, frame]).sort("seq", maintain_order=True)
    top = int(frame["seq"].max()) if frame.height else 0
    return frame.unique("event_id", keep="first", maintain_order=True), top


def with_stored_events(
    base: Interactions, store_url: str, archive: Path | None = None
) -> tuple[Interactions, int, int]:
    """The base data plus every event in the data store at ``store_url`` and its archive
    (`stored_events`), read with polars; also how many events that is and the highest seq
    among them: the cursor recorded in the manifest (``store_seq``), after which the server
    replays events on top of the version.

    On PostgreSQL seq is handed out at insert, not commit: with several writing processes an
    event could commit below a cursor read meanwhile (issue 19). One server writes today."""
    from recsys_core.datastore import parse_store_url
    from recsys_core.events import events_to_interactions

    frame, top = stored_events(store_url, archive)
    if frame.height == 0:
        return base, 0, top
    redacted = parse_store_url(store_url).redacted
    try:
        logged = events_to_interactions(frame, EventWeights())
    except ValueError as e:
        raise config_mod.ConfigError(f"{redacted}: {e}") from e
    cols = ("user", "item", "weight", "timestamp")
    data = base.to_frame().select(cols)
    combined = pl.concat([data, logged.select(cols).cast(data.schema)])
    inter = from_frame(combined, ColumnMap(event=None), source=f"{redacted} + base data")
    return inter, frame.height, top


def with_stored_items(catalog: Catalog | None, store_url: str) -> tuple[Catalog | None, int]:
    """The catalogue with the store's item records merged over it (`live_catalogue.merge`),
    and how many records the store holds."""
    from recsys_core.datastore import StoreError, open_store

    try:
        _check_store_path(store_url)
        with open_store(store_url) as store:
            records = store.read_items()
    except StoreError as e:
        raise config_mod.ConfigError(f"--store: {e}") from e
    return live_catalogue.merge(catalog, records), len(records)


def archive_dir(cfg: config_mod.TrainConfig, out: Path) -> Path:
    return Path(cfg.retention.archive) if cfg.retention.archive else retention.default_archive(out)


def retention_window(cfg: config_mod.TrainConfig) -> float:
    try:
        return retention.parse_window(cfg.retention.window)
    except retention.RetentionError as e:
        raise config_mod.ConfigError(str(e)) from e


def run_retention(cfg: config_mod.TrainConfig, store_url: str, out: Path, now: float) -> str:
    """The retention rule after a publish (`recsys_trainer.retention`); its report line."""
    from recsys_core.datastore import StoreError, open_store

    window = retention_window(cfg)
    if window == 0:
        return "retention: off (the hot table keeps every event)"
    try:
        with open_store(store_url) as store:
            report = retention.apply(store, out, archive_dir(cfg, out), window, now)
    except (StoreError, retention.RetentionError) as e:
        raise config_mod.ConfigError(f"retention: {e}") from e
    return report.line()


def cmd_refresh(a: argparse.Namespace) -> int:
    cfg = config_mod.load(a.config, overrides(a))
    names = parse_models(a.models)
    every = parse_duration(a.every) if a.every else None
    retention_window(cfg)  # a bad value fails before training, not after
    out = Path(a.out)
    with open_engine(a) as engine:
        return refresh_loop(a, cfg, names, out, every, engine)


def refresh_loop(a, cfg, names, out: Path, every: float | None, engine: Engine) -> int:
    while True:
        base = load_data(Path(a.interactions), cfg, engine)
        catalog = load_catalog_for(a.catalog, Path(a.interactions))
        with step("read the data store"):
            inter, n_events, seq = with_stored_events(base, a.store, archive_dir(cfg, out))
            catalog, n_items = with_stored_items(catalog, a.store)
        inter = with_catalog(inter, catalog)
        left_out = check_fits(a, names, cfg, inter)
        extra = {"store_seq": seq, "store_items": n_items} | (
            {"left_out": left_out} if left_out else {}
        )
        path, _, _ = train_and_publish(inter, cfg, names, catalog, out, {}, extra, engine=engine)
        print(
            f"published {path}: base data + {n_events} stored events (seq <= {seq}), "
            f"{n_items} stored catalogue items",
            flush=True,
        )
        with step("retention"):
            line = run_retention(cfg, a.store, out, time.time())
        print(line, flush=True)
        if every is None:
            return 0
        time.sleep(every)


def cmd_evaluate(a: argparse.Namespace) -> int:
    extra = [f"evaluation.split={json.dumps(a.split)}", f"evaluation.k={a.k}"]
    cfg = config_mod.load(a.config, [*overrides(a), *extra])
    names = parse_models(a.models)
    with open_engine(a) as engine:
        catalog = load_catalog_for(a.catalog, Path(a.interactions))
        inter = with_catalog(load_data(Path(a.interactions), cfg, engine), catalog)
        left_out = check_fits(a, names, cfg, inter)
        dataset = Path(a.interactions).name
        report, _, _ = evaluate_models(inter, cfg, names, catalog, dataset, engine)
    if left_out:
        report.protocol["left out"] = "; ".join(f"{n}: {r}" for n, r in left_out.items())
    report.write(Path(a.report))
    print(Path(a.report, "report.md").read_text())
    return 0


def cmd_recommend(a: argparse.Namespace) -> int:
    from recsys_core import artifacts

    root = Path(a.artifacts)
    version = artifacts.latest_version(root)
    if version is None:
        raise SystemExit(f"no model version in {root}")
    loaded = artifacts.load_version(root / version)
    if a.model not in loaded.models:
        raise SystemExit(f"model {a.model!r} is not in {version}; it has {sorted(loaded.models)}")
    model = loaded.models[a.model]
    index = {u: i for i, u in enumerate(loaded.user_ids.tolist())}
    wanted = [line.strip() for line in Path(a.users).read_text().splitlines() if line.strip()]
    history = _training_history(loaded)
    empty = sp.csr_matrix((1, len(loaded.item_ids)), dtype=np.float32)
    # Unknown users get the cold-start list: popularity when trained, else the model itself
    # on an empty history.
    cold_model = loaded.models.get("popularity", model)
    cold = cold_model.recommend(np.array([-1]), empty, a.k).user(0).items
    out = Path(a.out)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w") as f:
        for chunk in _chunks(wanted, 1000):
            known = np.array([index.get(u, -1) for u in chunk])
            batch = model.recommend(known, history[np.maximum(known, 0)], a.k)
            for n, u in enumerate(chunk):
                items = batch.user(n).items if known[n] >= 0 else cold
                f.write(json.dumps({"user": u, "items": loaded.item_ids[items].tolist()}) + "\n")
    tmp.replace(out)
    print(f"wrote {len(wanted)} users to {out}")
    return 0


def _training_history(loaded) -> sp.csr_matrix:
    history = getattr(loaded, "history", None)
    if history is not None:
        return history
    if "user_cf" in loaded.models:
        return loaded.models["user_cf"].user_items_
    raise SystemExit("the artifacts hold no user histories")


def _chunks(xs: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys-train", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the seeded synthetic data set")
    g.add_argument("--out", required=True)
    g.add_argument(
        "--size", choices=tuple(synthetic.SIZES),
        help="a large catalogue: 1M (200k users, 5M interactions) or 10M items (1M users, 20M "
        "interactions), Zipf item popularity; --users/--items/--interactions override",
    )  # fmt: skip
    g.add_argument("--users", type=int, help="default 10,000 (or the --size preset's)")
    g.add_argument("--items", type=int, help="default 5,000 (or the --size preset's)")
    g.add_argument("--interactions", type=int, help="default 500,000 (or the --size preset's)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument(
        "--format", choices=("tsv", "parquet"), default="tsv",
        help="tsv: one file at --out; parquet: --out is a directory of --partitions files "
        "(users split among them), the input of --engine ray",
    )  # fmt: skip
    g.add_argument("--partitions", type=int, default=4, help="Parquet partitions (default 4)")
    g.set_defaults(func=cmd_generate)

    def common(sp_: argparse.ArgumentParser) -> None:
        sp_.add_argument(
            "--interactions", "--data", required=True, dest="interactions",
            help="behaviour log: MovieLens u.data, ratings.dat or ratings.csv, the Steam play "
            "log, or TSV/CSV/Parquet; a directory of Parquet partitions or a glob of them is "
            "read partition by partition (by the workers with --engine ray)",
        )  # fmt: skip
        sp_.add_argument(
            "--catalog", type=Path,
            help="item catalog: MovieLens u.item, movies.dat or movies.csv, or TSV/CSV with "
            "item, title, categories (default: catalog.tsv, movies.csv, movies.dat or u.item "
            "beside the log)",
        )  # fmt: skip
        sp_.add_argument("--config", help="TOML configuration file")
        sp_.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a configuration value, e.g. models.item_cf.k_neighbors=100",
        )
        sp_.add_argument("--models", help=f"comma-separated subset of {','.join(ALL)}")
        sp_.add_argument(
            "--format", choices=get_args(Format),
            help="input format (default: detected from the file)",
        )  # fmt: skip
        for col in ("user", "item", "weight", "event", "timestamp"):
            sp_.add_argument(
                f"--{col}-col", metavar="NAME|N", help=f"{col} column: header name or position"
            )
        sp_.epilog = (
            "A column given as a number N is the Nth field (1-based) of a file without a "
            "header, e.g. --user-col 1 --item-col 2 --weight-col 3 --timestamp-col 4; then "
            "give every column you use by position: the others are absent (weight 1, no time)."
        )
        sp_.add_argument(
            "--event-weights", metavar="TYPE=W,...",
            help="weight of each event type, e.g. view=1,click=2,purchase=8",
        )  # fmt: skip
        sp_.add_argument(
            "--no-tune", action="store_true",
            help="fit the configured hyperparameters as they are (no validation search)",
        )  # fmt: skip
        sp_.add_argument(
            "--tune-budget", type=float, metavar="SECONDS",
            help="safety limit on the hyperparameter search of all models together, checked "
            "before each trial (a search it cuts is no longer reproducible); 0 = no limit "
            f"(default {tuning.TuneConfig.budget_seconds:g} s)",
        )  # fmt: skip
        sp_.add_argument(
            "--engine", choices=engine_mod.ENGINES, default="local",
            help="where tuning trials, neighbour lists, ALS half-steps and the evaluation run: "
            "this process (local, the default) or a Ray cluster (ray; needs the ray extra)",
        )  # fmt: skip
        sp_.add_argument(
            "--ray-address", metavar="ADDR",
            help="the Ray cluster to join, e.g. 127.0.0.1:6379 (default: Ray's own lookup: "
            "RAY_ADDRESS, then a cluster started on this machine)",
        )  # fmt: skip

    t = sub.add_parser("train", help="fit models and publish a new artifact version")
    common(t)
    t.add_argument("--out", required=True, help="artifacts directory")
    t.add_argument(
        "--no-evaluate",
        action="store_true",
        help="skip the holdout evaluation stored in the manifest",
    )
    t.set_defaults(func=cmd_train)

    f = sub.add_parser(
        "refresh", help="retrain on the base data plus the server's data store and publish"
    )
    common(f)
    f.add_argument(
        "--store",
        # From the environment, a DSN's password stays off the command line (`ps`).
        default=os.environ.get("RECSYS_STORE_URL") or None,
        required=not os.environ.get("RECSYS_STORE_URL"),
        metavar="URL",
        help="the server's data store: sqlite:///PATH or postgresql://… "
        "(default: $RECSYS_STORE_URL)",
    )
    f.add_argument("--out", required=True, help="artifacts directory")
    f.add_argument("--every", help="repeat every DURATION (e.g. 10m); default: once")
    f.add_argument(
        "--retention", metavar="WINDOW",
        help="after publishing, archive the events every kept version has folded in that were "
        "stored more than WINDOW ago (e.g. 7d, 12h) to Parquet and delete them from the "
        f"store; off or 0 disables (default {config_mod.RetentionConfig.window})",
    )  # fmt: skip
    f.add_argument(
        "--archive", metavar="DIR",
        help="where retention writes, and refresh reads, archived events "
        "(default: <out>/../events-archive)",
    )  # fmt: skip
    f.set_defaults(func=cmd_refresh)

    e = sub.add_parser("evaluate", help="compare models on a split and write a report")
    common(e)
    e.add_argument("--split", default="random", choices=["random", "temporal", "leave_last"])
    e.add_argument("--k", type=int, default=10)
    e.add_argument("--report", required=True, help="directory for report.{md,json,png}")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("recommend", help="batch export of top-k lists as JSON lines")
    r.add_argument("--artifacts", required=True)
    r.add_argument("--model", required=True, choices=ALL)
    r.add_argument("--users", required=True, help="file with one user id per line")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_recommend)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FileNotFoundError as e:
        print(f"recsys-train: error: no such file: {e.filename or e}", file=sys.stderr)
        return 2
    except (DataError, config_mod.ConfigError) as e:
        print(f"recsys-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

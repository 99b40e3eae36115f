"""Prometheus metrics on the server's own registry, exported over HTTP.

Labels never hold a user or item id: only method names, status codes, model names, configured
A/B experiments and variants, tiers, outcomes, load-failure and drop reasons and the serving
version. Every label value known up
front is initialised, so a series exists (at 0) before its first event.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from recsys_core.artifacts import REASONS
from recsys_core.datastore import DataStore
from recsys_core.models import MODELS
from recsys_server.config import Experiment
from recsys_server.config_reload import RESULTS as CONFIG_RELOAD_RESULTS
from recsys_server.drift import DriftCollector, DriftTracker
from recsys_server.router import INTERLEAVED, PERSONALIZED, TIERS
from recsys_server.snapshot import variant_key

METHODS = (
    "Recommend",
    "RecommendBatch",
    "SimilarItems",
    "RecordInteractions",
    "ListModels",
    "ReloadModels",
    "UpsertItems",
    "SetItemAvailability",
    "GetItem",
    "ListItems",
    "GetUserHistory",
    "GetExperimentReport",
)
CODES = (
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "INTERNAL",
    "CANCELLED",
    "DEADLINE_EXCEEDED",
)
SHUTDOWN_OUTCOMES = ("completed", "cancelled", "refused")
LOAD_FAILURES = (*sorted(REASONS), "warmup_failed", "error")
# Sub-millisecond buckets too: a Recommend is handled in a few hundred microseconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
FOLLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""``recsys_follower_delay_seconds``: visibility across replicas is aimed at p99 <= 250 ms."""
NO_VARIANT = "none"
OUTCOMES = ("click", "conversion", "value")
"""``recsys_outcomes_total``'s outcome label: config.outcomes' clicks, conversions, values."""
DROP_REASONS = ("queue_full", "store_refused", "shutdown")


class Metrics:
    def __init__(self, experiments: tuple[Experiment, ...] = ()) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recsys_requests", "RPCs by method and status code", ["method", "code"], registry=r
        )
        self.duration = Histogram(
            "recsys_request_duration_seconds",
            "RPC handling time by method",
            ["method"],
            buckets=BUCKETS,
            registry=r,
        )
        self.recommendations = Counter(
            "recsys_recommendations",
            "Recommendation lists served, by answering model, A/B variant and fallback tier",
            ["model", "variant", "tier"],
            registry=r,
        )
        self.model_info = Gauge(
            "recsys_model_info", "1 for the model version being served", ["version"], registry=r
        )
        self.trained = Gauge(
            "recsys_model_trained_timestamp_seconds",
            "Training time of the served version (unix seconds)",
            registry=r,
        )
        self.load_seconds = Gauge(
            "recsys_model_load_seconds",
            "Time to load, validate and warm up the served version",
            registry=r,
        )
        self.load_failures = Counter(
            "recsys_model_load_failures",
            "Model versions refused, by reason",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter(
            "recsys_model_reloads", "Model versions loaded and swapped in", registry=r
        )
        self.recorded = Counter(
            "recsys_interactions_recorded",
            "Interaction events durably recorded (duplicates excluded)",
            registry=r,
        )
        self.recovered = Counter(
            "recsys_interactions_recovered",
            "Events a commit reported as failed had stored after all (connection lost after "
            "COMMIT): read back and folded into live histories",
            registry=r,
        )
        self.inflight = Gauge("recsys_inflight_requests", "RPCs being handled", registry=r)
        self.abandoned = Counter(
            "recsys_work_abandoned",
            "RPCs whose work stopped early because the caller gave up (deadline or cancel)",
            ["method"],
            registry=r,
        )
        self.abandoned.labels("RecommendBatch")
        self.shutdown_calls = Counter(
            "recsys_shutdown_calls",
            "Recommender RPCs at shutdown: in flight at NOT_SERVING and completed, or cancelled "
            "(grace ran out, or the caller gave up); refused with UNAVAILABLE while draining",
            ["outcome"],
            registry=r,
        )
        for outcome in SHUTDOWN_OUTCOMES:
            self.shutdown_calls.labels(outcome)
        # Freshness and drift (docs/monitoring.md); the gauges below are computed at scrape.
        self.loaded = Gauge(
            "recsys_model_loaded", "1 once a model version serves, else 0", registry=r
        )
        self._trained_at: float | None = None
        Gauge(
            "recsys_model_age_seconds",
            "Seconds since the served version was trained (NaN before the first load)",
            registry=r,
        ).set_function(self._age)
        self._since_training: Callable[[], float] = lambda: math.nan
        Gauge(
            "recsys_interactions_since_training",
            "Events in the data store after those the served version was trained on",
            registry=r,
        ).set_function(lambda: self._since_training())
        self.store = StoreCollector()
        r.register(self.store)
        self.drift = DriftTracker(TIERS)
        r.register(DriftCollector(self.drift))
        self._served: dict[tuple[str, str, str, str], Any] = {}
        # Experiments: impressions and outcomes by (experiment, variant), "none" outside any.
        # The values come from answers, so only configured experiments ever appear.
        self.impressions = Counter(
            "recsys_impressions",
            "Impressions (recommendation answers) stored, by experiment and variant",
            ["experiment", "variant"],
            registry=r,
        )
        self.impressions_dropped = Counter(
            "recsys_impressions_dropped",
            "Impressions not stored: queue_full (overload or a long store outage), "
            "store_refused (what the store cannot take, e.g. a user id with NUL), shutdown (not "
            "stored in time)",
            ["reason"],
            registry=r,
        )
        self.outcomes = Counter(
            "recsys_outcomes",
            "Recorded events credited live to an impression (its recommendation_id, else the "
            "user's latest impression of the item within attribution_hours), by experiment, "
            "variant and outcome (config.outcomes)",
            ["experiment", "variant", "outcome"],
            registry=r,
        )
        for reason in DROP_REASONS:
            self.impressions_dropped.labels(reason)
        self.init_experiments(experiments)

        for m in METHODS:
            self.duration.labels(m)
            for c in CODES:
                self.requests.labels(m, c)
        self.config_reloads = Counter(
            "recsys_config_reloads",
            "Configuration reloads (SIGHUP) by result: applied, unchanged, refused (invalid "
            "file; the previous configuration keeps serving)",
            ["result"],
            registry=r,
        )
        for result in CONFIG_RELOAD_RESULTS:
            self.config_reloads.labels(result)
        # Replicas sharing one store (recsys_server.follow); 0 without a follower.
        self.followed_events = Counter(
            "recsys_follower_events_folded",
            "Events other replicas stored, folded into this replica's live histories",
            registry=r,
        )
        self.followed_items = Counter(
            "recsys_follower_items_applied",
            "Catalogue records other replicas changed, applied to this replica's catalogue",
            registry=r,
        )
        self.follow_delay = Histogram(
            "recsys_follower_delay_seconds",
            "From another replica's commit (its stored_at clock) to the fold here",
            buckets=FOLLOW_BUCKETS,
            registry=r,
        )
        self._follower: Any = None
        Gauge(
            "recsys_follower_lag_seconds",
            "Seconds since the follower last read everything stored (0: caught up)",
            registry=r,
        ).set_function(lambda: self._follower.lag_seconds() if self._follower else 0.0)
        Gauge(
            "recsys_follower_lag_seqs",
            "Stored events the follower has not read yet: seqs between its cursor and the "
            "store's head, plus the missing seqs it still waits for",
            registry=r,
        ).set_function(lambda: self._follower.lag_seqs if self._follower else 0)
        self.init_variants(experiments)
        for reason in LOAD_FAILURES:
            self.load_failures.labels(reason)
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def init_variants(self, experiments: tuple[Experiment, ...]) -> None:
        """Creates the per-variant series of ``experiments`` at 0 (at start and after a
        configuration reload; the series of removed variants stay)."""
        variants = [NO_VARIANT]
        for e in experiments:
            if e.kind == "interleave":  # one arm: both models' lists merged
                v = variant_key(e.name, INTERLEAVED)
                variants.append(v)
                self.recommendations.labels("+".join(x.model for x in e.variants), v, PERSONALIZED)
            else:
                variants += [variant_key(e.name, x.name) for x in e.variants]
        for model in MODELS:
            for v in variants:
                for t in TIERS:
                    self.recommendations.labels(model, v, t)

    def served(
        self, model: str, experiment: str, variant: str, tier: str, items: Sequence[Any] = ()
    ) -> None:
        key = (model, experiment, variant, tier)
        child = self._served.get(key)  # .labels() costs microseconds on every request
        if child is None:
            v = variant_key(experiment, variant) if variant else NO_VARIANT
            child = self._served[key] = self.recommendations.labels(model, v, tier)
        child.inc()
        self.drift.served(tier, items)

    def follower(self, f: Any) -> None:
        """The lag gauges read ``f`` (a `recsys_server.follow.Follower`) at scrape time."""
        self._follower = f

    def followed(self, events: int, items: int, delays: Sequence[float]) -> None:
        self.followed_events.inc(events)
        self.followed_items.inc(items)
        for d in delays:
            self.follow_delay.observe(d)

    def init_experiments(self, experiments: tuple[Experiment, ...]) -> None:
        """Create the experiment series (at 0) of ``experiments``, e.g. after a reload."""
        pairs = [(NO_VARIANT, NO_VARIANT)] + [
            (e.name, v)
            for e in experiments
            for v in ([INTERLEAVED] if e.kind == "interleave" else [x.name for x in e.variants])
        ]
        for experiment, variant in pairs:
            self.impressions.labels(experiment, variant)
            for outcome in OUTCOMES:
                self.outcomes.labels(experiment, variant, outcome)

    def impression_stored(self, experiment: str, variant: str, n: int = 1) -> None:
        self.impressions.labels(experiment or NO_VARIANT, variant or NO_VARIANT).inc(n)

    def outcome(self, experiment: str, variant: str, outcome: str, amount: float = 1.0) -> None:
        """Count an outcome (``value``: by its worth) for an impression's variant."""
        labels = (experiment or NO_VARIANT, variant or NO_VARIANT, outcome)
        self.outcomes.labels(*labels).inc(amount)

    def watch(self, snapshot: Callable[[], Any], since_training: Callable[[], float]) -> None:
        """Where the scrape-time signals read the serving `Snapshot` (or None) and the number
        of stored events after those it was trained on (NaN before a version serves)."""
        self.drift.follow(snapshot)
        self._since_training = since_training

    def _age(self) -> float:
        t = self._trained_at
        return math.nan if t is None else time.time() - t

    def swapped(self, version: str, trained_at: float, load_seconds: float) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        self.trained.set(trained_at)
        self._trained_at = trained_at
        self.loaded.set(1)
        self.load_seconds.set(load_seconds)
        self.reloads.inc()

    def serve_http(self, host: str, port: int) -> int:
        """Starts the /metrics endpoint (a daemon thread); returns the bound port."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class StoreCollector(Collector):
    """The data store's state and counters, read at scrape time (``store`` is set once the
    store is open; before that everything is 0)."""

    def __init__(self) -> None:
        self.store: DataStore | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.store
        yield GaugeMetricFamily(
            "recsys_store_up",
            "1 while the data store answers (its last commit or ping succeeded), else 0",
            value=1 if s is not None and s.state == "ok" else 0,
        )
        counters = (
            ("commits", "Data store transactions committed (one group commit holds the events "
             "of every call queued meanwhile)"),
            ("events_committed", "Events newly stored by those commits (events per commit: "
             "the rate of this over the rate of commits)"),
            ("commit_errors", "Data store commits that failed (every call in them was answered "
             "UNAVAILABLE or RESOURCE_EXHAUSTED; nothing of them acknowledged)"),
        )  # fmt: skip
        for name, doc in counters:
            yield CounterMetricFamily(
                f"recsys_store_{name}", doc, value=0 if s is None else getattr(s, name)
            )

"""Server configuration: a dataclass with defaults, loadable from TOML, overridden by the
environment (tokens) and then by command-line flags.

```toml
artifacts = "/srv/recsys/artifacts"
port = 50051
default_model = "hybrid"

[[experiments]]
name = "blend"
[[experiments.variants]]
name = "control"
model = "hybrid"
share = 0.5
[[experiments.variants]]
name = "more-svd"
model = "hybrid"
share = 0.5
hybrid_weights = { svd = 2.0 }
```
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_core.datastore import StoreConfigError, parse_store_url, redact
from recsys_core.models import MODELS
from recsys_core.models.registry import COMPONENTS
from recsys_server.explained import EXPLAINED_USERS
from recsys_server.live import EVENT_TYPES

TRAINING = "training"
"""The verb key of training history (its event types are not kept: a neutral verb)."""
SESSION = "session"
"""The verb key of ``recent_item_ids``."""
DEFAULT_VERBS = {
    "view": "viewed",
    "click": "clicked",
    "add_to_cart": "added {} to your cart",
    "purchase": "bought",
    "rating": "rated",
    SESSION: "viewed",
    TRAINING: "chose",
}
"""What explanations say a user did to an item, per event type: "Because you bought Heat".
``{}`` marks where the titles go (default: after the verb). Training history says "chose",
true of any log (ratings, purchases, plays)."""
MAX_VERB = 40

TOKEN_ENV = {
    "write_token": "RECSYS_WRITE_TOKEN",
    "admin_token": "RECSYS_ADMIN_TOKEN",
    "read_token": "RECSYS_READ_TOKEN",
}
STORE_ENV = "RECSYS_STORE_URL"
"""The data store's URL from the environment: a DSN's password stays off command lines."""


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    share: float
    hybrid_weights: dict[str, float] | None = None
    """Only for ``model = "hybrid"``: weights replacing the trained ones for the components
    named (the others keep their trained weight)."""


KINDS = ("ab", "interleave")
"""``ab``: each user sees their variant's list. ``interleave``: exactly two variants (two
rankers); every user whose bucket falls in the variants' shares sees one list merged from both
by team draft, and each click is credited to the ranker that placed the item."""


@dataclass(frozen=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    kind: str = "ab"

    @property
    def control(self) -> Variant:
        """The first variant: what the others are compared with."""
        return self.variants[0]


@dataclass(frozen=True)
class Outcomes:
    """Which event types count as what in experiment reports (an event type may count as
    several). A value event is worth its rating when it carries one, else 1."""

    clicks: tuple[str, ...] = ("click",)
    conversions: tuple[str, ...] = ("purchase",)
    values: tuple[str, ...] = ("purchase",)

    def kinds(self, event_type: str) -> list[str]:
        """What an event of ``event_type`` counts as: some of click, conversion, value."""
        named = (("click", self.clicks), ("conversion", self.conversions), ("value", self.values))
        return [name for name, types in named if event_type in types]


@dataclass(frozen=True)
class ServerConfig:
    artifacts: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    """0 picks a free port (printed at start)."""
    metrics_port: int = 9100
    """Prometheus HTTP endpoint on ``host``; 0 picks a free port."""
    store: str | None = None
    """The data store URL (`recsys_core.datastore`): ``sqlite:///PATH`` or ``postgresql://…``;
    default ``sqlite:///<artifacts>/../events.db``."""
    import_log: Path | None = None
    """An event log directory of the server before the data store, imported into the store
    once at start (then marked); default ``<artifacts>/../events``, when it exists."""
    poll_seconds: float = 2.0
    follow_seconds: float = 1.0
    """PostgreSQL store: replicas sharing it fold each other's events and catalogue changes
    (`recsys_server.follow`), woken by NOTIFY at each commit and polling every this many
    seconds as the fallback. 0: no following. A SQLite store has one server: no follower."""
    default_model: str = "hybrid"
    max_concurrent_rpcs: int = 256
    grace_seconds: float = 5.0
    """Shutdown budget from SIGTERM to exit: draining, then what is still running."""
    drain_seconds: float = 2.0
    """Longest the port stays open after NOT_SERVING, refusing new calls with UNAVAILABLE while
    the calls already accepted finish; capped by ``grace_seconds``."""
    drain_quiet_seconds: float = 0.5
    """Draining ends early once the accepted calls have finished and no call has arrived for
    this long (the clients have moved away)."""
    precompute_users: int = 20_000
    """The hybrid's ranking of this many of the most active known users is computed when a
    version loads; their requests without filters then read it (``rankings.RankingCache``).
    0: rank every request."""
    explained_users: int = EXPLAINED_USERS
    """Known users whose hybrid explanations are kept for their current history
    (``recsys_server.explained``, about 5 KB each); the most active of the precomputed users
    are explained when a version loads (about 0.7 ms each). 0: explain every request."""
    warmup_seconds: float = 0.0
    """Extra warm-up when a version loads: score known users (every route, with explanations)
    until each was scored once or this time is up, so their first requests find warm rows and
    caches. The old version serves meanwhile; a large version takes longer to swap in."""
    experiments: tuple[Experiment, ...] = ()
    outcomes: Outcomes = Outcomes()
    attribution_hours: float = 24.0
    """An event without a (known) recommendation_id is credited to the latest impression that
    showed its item to its user within this many hours before it."""
    impression_queue: int = 10_000
    """Impressions waiting to be stored (off the request path); beyond it new ones are
    dropped and counted. 0: impressions are not recorded."""
    event_verbs: dict[str, str] = dataclasses.field(default_factory=dict)
    """Explanation verbs replacing `DEFAULT_VERBS` for the event types named (an event type
    of `recsys_server.live.EVENT_TYPES`, ``session`` or ``training``)."""
    write_token: str | None = None
    admin_token: str | None = None
    read_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        check(self)

    @property
    def verbs(self) -> dict[str, str]:
        """`DEFAULT_VERBS` with ``event_verbs`` applied."""
        return DEFAULT_VERBS | dict(self.event_verbs)

    @property
    def var_dir(self) -> Path:
        """Where the defaults live: the directory holding the artifacts directory."""
        if self.artifacts is None:
            raise ConfigError("artifacts is not set")
        return self.artifacts.resolve().parent

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.var_dir / 'events.db'}"

    @property
    def import_log_dir(self) -> Path:
        return self.import_log if self.import_log is not None else self.var_dir / "events"

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:  # never print a token or the store's password
        shown = {
            f.name: (
                "***"
                if f.name.endswith("_token") and getattr(self, f.name)
                else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }
        if self.store is not None:
            shown["store"] = redact(self.store)
        return f"ServerConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def check(c: ServerConfig) -> None:
    if not (0 <= c.port <= 65535) or not (0 <= c.metrics_port <= 65535):
        raise ConfigError("port and metrics_port must be in 0..65535")
    if not (c.poll_seconds > 0 and math.isfinite(c.poll_seconds)):
        raise ConfigError(f"poll_seconds must be > 0, got {c.poll_seconds}")
    if not (c.follow_seconds >= 0 and math.isfinite(c.follow_seconds)):
        raise ConfigError(f"follow_seconds must be >= 0 (0: off), got {c.follow_seconds}")
    for name in ("grace_seconds", "drain_seconds", "drain_quiet_seconds"):
        value = getattr(c, name)
        if not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be >= 0, got {value}")
    if not (math.isfinite(c.warmup_seconds) and c.warmup_seconds >= 0):
        raise ConfigError(f"warmup_seconds must be >= 0, got {c.warmup_seconds}")
    for name in ("precompute_users", "explained_users"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(c, name)}")
    if c.max_concurrent_rpcs < 1:
        raise ConfigError("max_concurrent_rpcs must be >= 1")
    if c.default_model not in MODELS:
        raise ConfigError(f"default_model {c.default_model!r} is not one of {sorted(MODELS)}")
    if c.store is not None:
        try:
            parse_store_url(c.store)
        except StoreConfigError as e:
            raise ConfigError(str(e)) from None
    if (c.tls_cert is None) != (c.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    for name in TOKEN_ENV:
        tok = getattr(c, name)
        if tok is not None and not tok.strip():
            raise ConfigError(f"{name} must not be empty")
    check_verbs(c.event_verbs)
    seen: set[str] = set()
    for exp in c.experiments:
        if not exp.name or exp.name in seen:
            raise ConfigError(f"experiment names must be unique and non-empty: {exp.name!r}")
        seen.add(exp.name)
        if not exp.variants:
            raise ConfigError(f"experiment {exp.name!r} has no variants")
        if exp.kind not in KINDS:
            raise ConfigError(
                f"experiment {exp.name!r}: kind must be one of {', '.join(KINDS)}, got {exp.kind!r}"
            )
        if exp.kind == "interleave" and len(exp.variants) != 2:
            raise ConfigError(
                f"experiment {exp.name!r}: an interleave experiment has exactly 2 variants, "
                f"got {len(exp.variants)}"
            )
        names = [v.name for v in exp.variants]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"experiment {exp.name!r}: variant names must be unique")
        total = 0.0
        for v in exp.variants:
            where = f"experiment {exp.name!r} variant {v.name!r}"
            if v.model not in MODELS:
                raise ConfigError(f"{where}: model {v.model!r} is not one of {sorted(MODELS)}")
            if not (0.0 <= v.share <= 1.0):
                raise ConfigError(f"{where}: share must be in [0, 1], got {v.share}")
            total += v.share
            if v.hybrid_weights is not None:
                if v.model != "hybrid":
                    raise ConfigError(f"{where}: hybrid_weights needs model = 'hybrid'")
                for k, w in v.hybrid_weights.items():
                    if k not in COMPONENTS:
                        raise ConfigError(f"{where}: unknown hybrid component {k!r}")
                    if not (math.isfinite(w) and w >= 0):
                        raise ConfigError(f"{where}: weight {k} must be finite and >= 0")
        if total > 1.0 + 1e-9:
            raise ConfigError(f"experiment {exp.name!r}: shares add up to {total:g} > 1")
    check_outcomes(c.outcomes)
    if not (math.isfinite(c.attribution_hours) and c.attribution_hours > 0):
        raise ConfigError(f"attribution_hours must be > 0, got {c.attribution_hours}")
    if c.impression_queue < 0:
        raise ConfigError(f"impression_queue must be >= 0, got {c.impression_queue}")


def check_outcomes(o: Outcomes) -> None:
    for name in ("clicks", "conversions", "values"):
        for kind in getattr(o, name):
            if kind not in EVENT_TYPES:
                raise ConfigError(
                    f"outcomes.{name}: unknown event type {kind!r}; known: {', '.join(EVENT_TYPES)}"
                )


def check_verbs(verbs: Any) -> None:
    if not isinstance(verbs, dict):
        raise ConfigError(f"event_verbs: expected a table of event type = verb, got {verbs!r}")
    known = (*EVENT_TYPES, SESSION, TRAINING)
    for kind, verb in verbs.items():
        if kind not in known:
            raise ConfigError(
                f"event_verbs: unknown event type {kind!r}; known: {', '.join(known)}"
            )
        if not isinstance(verb, str) or not verb.strip() or len(verb) > MAX_VERB:
            raise ConfigError(
                f"event_verbs.{kind}: expected a verb of 1..{MAX_VERB} characters, got {verb!r}"
            )
        rest = verb.replace("{}", "", 1)
        if "{" in rest or "}" in rest:
            raise ConfigError(f"event_verbs.{kind}: at most one {{}} (where titles go): {verb!r}")


_PATHS = {"artifacts", "import_log", "tls_cert", "tls_key"}
# Settings that no longer exist, and what replaced them.
_REPLACED = {
    "log_dir": "the event log became a data store: set store (a URL, default "
    "sqlite:///<artifacts>/../events.db) and import_log (the old log directory, imported once)",
    "log_fsync": "the data store always commits durably (SQLite synchronous=FULL)",
}
# Number-valued settings, read from the dataclass (annotations are strings here).
_FLOATS = {f.name for f in dataclasses.fields(ServerConfig) if f.type == "float"}


def from_dict(data: dict[str, Any], base: ServerConfig | None = None) -> ServerConfig:
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    if replaced := sorted(set(data) & set(_REPLACED)):
        key = replaced[0]
        raise ConfigError(f"{key} is no longer a setting: {_REPLACED[key]}")
    if unknown := sorted(set(data) - fields):
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in _PATHS:
            values[key] = None if raw is None else Path(raw)
        elif key == "experiments":
            values[key] = tuple(_experiment(e) for e in raw)
        elif key == "outcomes":
            values[key] = _outcomes(raw)
        elif key in _FLOATS:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(f"{key}: expected a number, got {raw!r}")
            values[key] = float(raw)
        else:
            values[key] = raw
    int_keys = (
        "port",
        "metrics_port",
        "max_concurrent_rpcs",
        "precompute_users",
        "explained_users",
        "impression_queue",
    )
    for key in int_keys:
        if key in values and (isinstance(values[key], bool) or not isinstance(values[key], int)):
            raise ConfigError(f"{key}: expected an integer, got {values[key]!r}")
    try:
        return dataclasses.replace(base or ServerConfig(), **values)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e


def _outcomes(raw: Any) -> Outcomes:
    fields = {"clicks", "conversions", "values"}
    if not isinstance(raw, dict) or set(raw) - fields:
        raise ConfigError(f"outcomes: a table of {', '.join(sorted(fields))}, got {raw!r}")
    out = {}
    for key, kinds in raw.items():
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ConfigError(f"outcomes.{key}: expected a list of event types, got {kinds!r}")
        out[key] = tuple(kinds)
    return Outcomes(**out)


def _experiment(raw: Any) -> Experiment:
    if not isinstance(raw, dict) or set(raw) - {"name", "variants", "kind"}:
        raise ConfigError(f"an experiment is a table with name, kind and variants, got {raw!r}")
    variants = []
    for v in raw.get("variants", []):
        if not isinstance(v, dict) or set(v) - {"name", "model", "share", "hybrid_weights"}:
            raise ConfigError(f"a variant has name, model, share, hybrid_weights; got {v!r}")
        try:
            weights = v.get("hybrid_weights")
            variants.append(
                Variant(
                    name=str(v["name"]),
                    model=str(v["model"]),
                    share=float(v["share"]),
                    hybrid_weights=None
                    if weights is None
                    else {str(k): float(w) for k, w in dict(weights).items()},
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"variant {v!r}: {e}") from e
    return Experiment(str(raw.get("name", "")), tuple(variants), str(raw.get("kind", "ab")))


def load(path: str | Path | None = None, env: dict[str, str] | None = None) -> ServerConfig:
    """Defaults, then the TOML file, then the token and store environment variables."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except OSError as e:
            raise ConfigError(f"{p}: {e.strerror or e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: {e}") from e
    env = os.environ if env is None else env
    for key, var in [*TOKEN_ENV.items(), ("store", STORE_ENV)]:
        if env.get(var):
            data[key] = env[var]
    return from_dict(data)


__all__ = [
    "STORE_ENV",
    "ConfigError",
    "Experiment",
    "Outcomes",
    "ServerConfig",
    "Variant",
    "load",
]

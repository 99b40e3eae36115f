"""Typed configuration: dataclasses loadable from TOML and overridable with ``--set a.b=v``.

```toml
[data.columns]
user = "user_id"
item = "item_id"

[models.item_cf]
k_neighbors = 200
[models.hybrid]
cold_start_threshold = 5
```
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_type_hints

from recsys_core.data import ColumnMap, EventWeights
from recsys_core.models import (
    HybridConfig,
    ItemCFConfig,
    PopularityConfig,
    SVDConfig,
    UserCFConfig,
)
from recsys_core.models.content import ContentConfig
from recsys_core.models.ease import EASEConfig
from recsys_trainer.tuning import TuneConfig


@dataclass(frozen=True)
class DataConfig:
    format: str = "auto"
    columns: ColumnMap | None = None
    """None: the format's own column names (MovieLens) or ``user item weight timestamp``."""
    event_weights: EventWeights = field(default_factory=EventWeights)
    min_user_interactions: int = 1
    catalog: str | None = None


@dataclass(frozen=True)
class EvalConfig:
    split: str = "random"
    """random | temporal | leave_last"""
    test_fraction: float = 0.2
    k: int = 10
    seed: int = 42


@dataclass(frozen=True)
class ModelsConfig:
    """One field per registered model (``models.registry``), named after it and typed with its
    config class; test_config checks the two agree."""

    popularity: PopularityConfig = field(default_factory=PopularityConfig)
    user_cf: UserCFConfig = field(default_factory=UserCFConfig)
    item_cf: ItemCFConfig = field(default_factory=ItemCFConfig)
    svd: SVDConfig = field(default_factory=SVDConfig)
    ease: EASEConfig = field(default_factory=EASEConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)


@dataclass(frozen=True)
class RetentionConfig:
    """What ``refresh`` archives after publishing (docs/trainer.md, "Retention")."""

    window: str = "7d"
    """Live window: events stored more recently stay in the hot table; "off" or 0 disables."""
    archive: str = ""
    """Archive directory; empty: ``<artifacts>/../events-archive``."""


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    tuning: TuneConfig = field(default_factory=TuneConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    keep_versions: int = 5


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(text: str) -> float:
    """'90s', '10m', '2h', '7d', '2w' or plain seconds, as seconds; ValueError when it is
    none of these, negative, NaN or infinite."""
    t = str(text).strip().lower()
    unit = DURATION_UNITS.get(t[-1:])
    value = float(t[:-1]) * unit if unit else float(t)
    if not 0 <= value < float("inf"):
        raise ValueError(f"not a duration: {text!r}")
    return value


class ConfigError(ValueError):
    pass


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Builds dataclass ``cls`` from a nested dict, checking keys and value types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table, got {values!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for name, raw in values.items():
        hint = hints[name]
        inner = [a for a in get_args(hint) if dataclasses.is_dataclass(a)]
        if inner and isinstance(raw, dict):
            hint = inner[0]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(raw, hint, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    if hint is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if hint is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if hint is bool and isinstance(raw, bool):
        return raw
    if hint is str and isinstance(raw, str):
        return raw
    if origin is dict and isinstance(raw, dict):
        return dict(raw)
    if hint in (int, float, bool, str):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {raw!r}")
    return raw  # Literal / optional values are checked by the dataclass or the model


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the TOML file, then ``key.path=value`` overrides (values parsed as TOML
    scalars, so ``--set models.item_cf.weighting="tfidf"`` or ``...=tfidf`` both work)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: {e}") from e
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
    return _build(TrainConfig, data, "config")

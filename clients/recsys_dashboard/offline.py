"""The trainer's offline comparison: from ListModels (the metrics the trainer stored in the
manifest) or from a ``recsys-train evaluate`` report.json."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys_client import ModelsResult

# (metric stem, column label, higher is better)
STEMS = (
    ("precision", "Precision", True),
    ("recall", "Recall", True),
    ("ndcg", "NDCG", True),
    ("map", "MAP", True),
    ("hit_rate", "Hit rate", True),
    ("coverage", "Coverage", True),
    ("diversity", "Diversity", True),
    ("novelty", "Novelty", True),
    ("train_time_s", "Train time (s)", False),
    ("latency_p50_ms", "Inference p50 (ms)", False),
    ("latency_p99_ms", "Inference p99 (ms)", False),
)
ACCURACY = ("precision", "recall", "ndcg", "map", "hit_rate")
ORDER = ("popularity", "user_cf", "item_cf", "svd", "hybrid")


@dataclass(frozen=True)
class Comparison:
    metrics: dict[str, dict[str, float]]
    """model -> metric key ("ndcg@10", "train_time_s") -> value."""
    source: str
    protocol: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        for row in self.metrics.values():
            for key in row:
                m = re.fullmatch(r"\w+@(\d+)", key)
                if m:
                    return int(m.group(1))
        return 10

    @property
    def models(self) -> list[str]:
        known = [m for m in ORDER if m in self.metrics]
        return known + sorted(m for m in self.metrics if m not in ORDER)

    def key(self, stem: str) -> str:
        return stem if stem.endswith(("_s", "_ms")) else f"{stem}@{self.k}"

    def label(self, stem: str) -> str:
        text = dict((s, label) for s, label, _ in STEMS)[stem]
        return text if stem.endswith(("_s", "_ms")) else f"{text}@{self.k}"

    def value(self, model: str, stem: str) -> float:
        v = self.metrics.get(model, {}).get(self.key(stem))
        return math.nan if v is None else float(v)

    def stems(self) -> list[str]:
        present = {key for row in self.metrics.values() for key in row}
        return [s for s, _, _ in STEMS if self.key(s) in present]

    def table(self) -> pd.DataFrame:
        """One row per model, one column per metric label."""
        rows = {m: {self.label(s): self.value(m, s) for s in self.stems()} for m in self.models}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")

    def long(self, stems: list[str]) -> pd.DataFrame:
        """model, metric, value rows for charts."""
        return pd.DataFrame(
            [
                {"model": m, "metric": self.label(s), "value": self.value(m, s)}
                for s in stems
                for m in self.models
                if math.isfinite(self.value(m, s))
            ]
        )

    def best(self, stem: str) -> str | None:
        higher = dict((s, h) for s, _, h in STEMS)[stem]
        vals = {m: self.value(m, stem) for m in self.models}
        vals = {m: v for m, v in vals.items() if math.isfinite(v)}
        if not vals:
            return None
        return (max if higher else min)(vals, key=lambda m: vals[m])


def from_models(models: ModelsResult) -> Comparison:
    return Comparison(
        {m.name: dict(m.metrics) for m in models.models if m.metrics},
        source=f"ListModels, version {models.version} (the trainer's evaluation in the manifest)",
    )


def from_report(directory: Path) -> Comparison | None:
    path = directory / "report.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    metrics = {
        m: {k: (math.nan if v is None else float(v)) for k, v in row.items()}
        for m, row in data.get("metrics", {}).items()
    }
    return Comparison(metrics, source=str(path), protocol=data.get("protocol", {}))

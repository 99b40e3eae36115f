"""Generates the Grafana dashboard for recsys-serve (provisioning JSON).

    python deploy/grafana/dashboard.py          # writes deploy/grafana/dashboards/recsys.json
    python deploy/grafana/dashboard.py --check  # exit 1 when the JSON is not what this writes

The panels are kept here as code, not as hand-edited JSON: one line per query, the same
selector and rate window everywhere, and tests/monitoring reads `queries()` to run every
expression against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "recsys.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources
SEL = 'job="$job", instance=~"$instance"'
RATE = "$__rate_interval"
BUDGET_S = 0.1
TARGET_S = 0.01
READ_METHODS = "Recommend|RecommendBatch|SimilarItems|RecordInteractions|ListModels"


def q(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend or "__auto"}


def quantile(p: float, by: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return (
        f"histogram_quantile({p}, sum by ({group}) (rate("
        f'recsys_request_duration_seconds_bucket{{{SEL}, method=~"{READ_METHODS}"}}[{RATE}])))'
    )


def panel(
    title: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
    thresholds: list[tuple[float, str]] | None = None,
    stack: bool = False,
    **defaults: Any,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": c, "value": v} for v, c in thresholds or []]
    field: dict[str, Any] = {
        "unit": unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        **defaults,
    }
    if kind == "timeseries":
        field["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stack else 0,
            "showPoints": "never",
            "spanNulls": True,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if thresholds else "off"},
        }
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DATASOURCE, **t}
            for n, t in enumerate(targets)
        ],
        "fieldConfig": {"defaults": field, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout() -> list[tuple[dict[str, Any], int, int]]:
    """(panel, width, height) in reading order; rows take a full line."""
    return [
        (row("Traffic and latency"), 24, 1),
        (
            panel(
                "Request rate by method",
                [
                    q(
                        f"sum by (method) (rate(recsys_requests_total{{{SEL}}}[{RATE}]))",
                        "{{method}}",
                    )
                ],
                unit="reqps",
            ),
            12,
            8,
        ),
        (
            panel(
                "Latency p50 / p95 / p99 (server side) vs the 100 ms budget",
                [
                    q(quantile(0.5), "p50"),
                    q(quantile(0.95), "p95"),
                    q(quantile(0.99), "p99"),
                ],
                unit="s",
                description="Handling time of every RPC but ReloadModels. Red line: the "
                "100 ms p99 budget; orange: the 10 ms target for Recommend.",
                thresholds=[(TARGET_S, "orange"), (BUDGET_S, "red")],
            ),
            12,
            8,
        ),
        (
            panel(
                "Errors by code",
                [
                    q(
                        f'sum by (code) (rate(recsys_requests_total{{{SEL}, code!="OK"}}[{RATE}]))',
                        "{{code}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            8,
            8,
        ),
        (
            panel(
                "p99 by method",
                [q(quantile(0.99, "method"), "{{method}}")],
                unit="s",
                thresholds=[(BUDGET_S, "red")],
            ),
            8,
            8,
        ),
        (
            panel(
                "In-flight requests",
                [q(f"sum(recsys_inflight_requests{{{SEL}}})", "in flight")],
            ),
            8,
            8,
        ),
        (row("Model"), 24, 1),
        (
            panel(
                "Model version",
                [q(f"max by (version) (recsys_model_info{{{SEL}}} == 1)", "{{version}}")],
                kind="stat",
                description="The version being served (1 per instance).",
                **{"displayName": "${__field.labels.version}"},
            ),
            6,
            5,
        ),
        (
            panel(
                "Model age",
                [q(f"max(recsys_model_age_seconds{{{SEL}}})", "age")],
                unit="s",
                kind="stat",
                thresholds=[(86400, "orange"), (2 * 86400, "red")],
            ),
            6,
            5,
        ),
        (
            panel(
                "Interactions since training",
                [q(f"sum(recsys_interactions_since_training{{{SEL}}})", "events")],
                kind="stat",
            ),
            6,
            5,
        ),
        (
            panel(
                "Model loads and refusals",
                [
                    q(f"sum(increase(recsys_model_reloads_total{{{SEL}}}[1h]))", "loaded (1 h)"),
                    q(
                        f"sum by (reason) (increase(recsys_model_load_failures_total{{{SEL}}}"
                        f"[1h]))",
                        "refused: {{reason}}",
                    ),
                ],
                kind="stat",
            ),
            6,
            5,
        ),
        (row("What is served"), 24, 1),
        (
            panel(
                "Fallback tiers",
                [
                    q(
                        f"sum by (tier) (rate(recsys_recommendations_total{{{SEL}}}[{RATE}]))",
                        "{{tier}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            8,
            8,
        ),
        (
            panel(
                "A/B variant traffic",
                [
                    q(
                        f"sum by (variant) (rate(recsys_recommendations_total{{{SEL}}}[{RATE}]))",
                        "{{variant}}",
                    )
                ],
                unit="reqps",
                stack=True,
                description="Lists served per experiment/variant; 'none': no experiment.",
            ),
            8,
            8,
        ),
        (
            panel(
                "Interactions recorded per second",
                [
                    q(
                        f"sum(rate(recsys_interactions_recorded_total{{{SEL}}}[{RATE}]))",
                        "recorded",
                    ),
                    q(
                        f"sum(rate(recsys_store_commit_errors_total{{{SEL}}}[{RATE}]))",
                        "store commit errors",
                    ),
                ],
                unit="ops",
            ),
            8,
            8,
        ),
        (row("Experiments"), 24, 1),
        (
            panel(
                "Impressions per second by variant",
                [
                    q(
                        f"sum by (experiment, variant) (rate(recsys_impressions_total{{{SEL}}}"
                        f"[{RATE}]))",
                        "{{experiment}}/{{variant}}",
                    )
                ],
                unit="ops",
                description="Recommendation lists recorded as impressions, per experiment and "
                "variant (an interleave experiment's users: 'interleaved').",
            ),
            8,
            8,
        ),
        (
            panel(
                "Outcomes per impression by variant",
                [
                    q(
                        f"sum by (experiment, variant, outcome) (rate(recsys_outcomes_total"
                        f"{{{SEL}}}[{RATE}])) / on (experiment, variant) group_left "
                        f"sum by (experiment, variant) (rate(recsys_impressions_total{{{SEL}}}"
                        f"[{RATE}]))",
                        "{{experiment}}/{{variant}} {{outcome}}",
                    )
                ],
                description="Attributed clicks, conversions and value per impression: a live "
                "view only; the experiment report (recsys experiments report NAME) gives the "
                "user-level comparison with its intervals.",
            ),
            8,
            8,
        ),
        (
            panel(
                "Outcomes per second by variant",
                [
                    q(
                        f"sum by (experiment, variant, outcome) (rate(recsys_outcomes_total"
                        f"{{{SEL}}}[{RATE}]))",
                        "{{experiment}}/{{variant}} {{outcome}}",
                    )
                ],
                unit="ops",
            ),
            8,
            8,
        ),
        (
            panel(
                "Dropped impressions",
                [
                    q(
                        f"sum(rate(recsys_impressions_dropped_total{{{SEL}}}[{RATE}]))",
                        "dropped per second",
                    ),
                    q(
                        f"sum(rate(recsys_impressions_dropped_total{{{SEL}}}[{RATE}])) / "
                        f"(sum(rate(recsys_impressions_total{{{SEL}}}[{RATE}])) + "
                        f"sum(rate(recsys_impressions_dropped_total{{{SEL}}}[{RATE}])))",
                        "share dropped",
                    ),
                ],
                description="Impressions dropped because the queue to the data store was "
                "full (overload or a slow store); the experiment report counts them too.",
                thresholds=[(0.000001, "red")],
            ),
            12,
            8,
        ),
        (
            panel(
                "Configuration reloads (SIGHUP) by result",
                [
                    q(
                        f"sum by (result) (increase(recsys_config_reloads_total{{{SEL}}}[1h]))",
                        "{{result}} (1 h)",
                    )
                ],
                description="refused: an invalid config file; the previous configuration "
                "keeps serving and the server's log names the field.",
            ),
            12,
            8,
        ),
        (row("Data store"), 24, 1),
        (
            panel(
                "Data store up",
                [q(f"min(recsys_store_up{{{SEL}}})", "up")],
                kind="stat",
                description="1 while the data store answers; 0 while it is down: writes are "
                "refused (UNAVAILABLE), Recommend keeps serving, the server pings it with backoff.",
            ),
            6,
            8,
        ),
        (
            panel(
                "Store commits per second",
                [
                    q(f"sum(rate(recsys_store_commits_total{{{SEL}}}[{RATE}]))", "commits"),
                    q(
                        f"sum(rate(recsys_store_commit_errors_total{{{SEL}}}[{RATE}]))",
                        "failed commits",
                    ),
                ],
                unit="ops",
            ),
            9,
            8,
        ),
        (
            panel(
                "Events per commit",
                [
                    q(
                        f"sum(rate(recsys_store_events_committed_total{{{SEL}}}[{RATE}])) / "
                        f"sum(rate(recsys_store_commits_total{{{SEL}}}[{RATE}]))",
                        "events per commit",
                    )
                ],
                description="Group commit: concurrent RecordInteractions calls share one "
                "transaction, so this grows with the write load.",
            ),
            9,
            8,
        ),
        (row("Drift and freshness (10-minute window in the server)"), 24, 1),
        (
            panel(
                "Cold-start share",
                [q(f'max(recsys_tier_share{{{SEL}, tier="cold_start"}})', "cold start")],
                unit="percentunit",
                thresholds=[(0.5, "red")],
                min=0,
                max=1,
            ),
            6,
            8,
        ),
        (
            panel(
                "Popularity profile: served vs training",
                [
                    q(f"avg(recsys_served_popularity_log_rank{{{SEL}}})", "served"),
                    q(f"avg(recsys_training_popularity_log_rank{{{SEL}}})", "training"),
                ],
                description="Mean normalised log-popularity rank ln(1+rank)/ln(items): 0 = the "
                "most popular item, 1 = the least. The alert fires at a gap over 0.35.",
                min=0,
                max=1,
            ),
            6,
            8,
        ),
        (
            panel(
                "Catalog coverage",
                [q(f"avg(recsys_catalog_coverage{{{SEL}}})", "coverage")],
                unit="percentunit",
                description="Distinct items served in the window / items in the version.",
                min=0,
                max=1,
            ),
            6,
            8,
        ),
        (
            panel(
                "Model age and new interactions",
                [
                    q(f"max(recsys_model_age_seconds{{{SEL}}}) / 3600", "age (h)"),
                    q(f"sum(recsys_interactions_since_training{{{SEL}}})", "interactions"),
                ],
            ),
            6,
            8,
        ),
    ]


def variable(name: str, query: str, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    panels, x, y, line_h = [], 0, 0, 0
    for n, (p, w, h) in enumerate(layout(), start=1):
        if x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        panels.append({"id": n, **p, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x, line_h = x + w, max(line_h, h)
    return {
        "uid": "recsys-serving",
        "title": "recsys-serve",
        "description": "Traffic, latency against the budget, model freshness and drift. "
        "Generated by deploy/grafana/dashboard.py.",
        "tags": ["recsys"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "utc",
        "templating": {
            "list": [
                variable("job", "label_values(recsys_model_loaded, job)", multi=False),
                variable(
                    "instance", 'label_values(recsys_model_loaded{job="$job"}, instance)', True
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def queries(d: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL with the dashboard's variables) for every target."""
    d = dashboard() if d is None else d
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the JSON is current")
    a = ap.parse_args()
    text = render()
    if a.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python deploy/grafana/dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

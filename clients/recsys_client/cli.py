"""``recsys``: the recsys-engine API from the shell.

    recsys [--target HOST:PORT] [--token T] recommend --user 42 --k 10 [--model M] [--explain]
                                                      [--diversity 0..1]
                                                      [--recent a,b] [--exclude a,b] [--allow a,b]
    recsys similar --item X [--k 10] [--model M]
    recsys models
    recsys record --user U --item I --event click [--rating 4.5] [--event-id ID] [--time T]
                  [--recommendation-id ID [--position N]]
    recsys reload
    recsys health [--service NAME]
    recsys upsert-item --item X [--title T] [--categories a,b] [--attr KEY=VALUE ...]
                       [--available | --unavailable]
    recsys set-availability --items a,b (--available | --unavailable)
    recsys item --item X
    recsys items [--page-size 100] [--page-token TOKEN] [--available | --unavailable]
    recsys history --user U [--limit 100]
    recsys experiments report NAME

``--target`` is ``host:port``, several replicas ``h1:p1,h2:p2`` (calls are balanced round-robin,
and a failed read is retried on another replica) or ``dns:///name:port``. ``--target`` and
``--token`` default to $RECSYS_TARGET and $RECSYS_TOKEN. ``--json`` prints the
result as JSON instead of a table. Exit status: 0 on success, 1 when the call failed (a one-line
message on stderr) or ``health`` is not SERVING, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from recsys_client._core import DEFAULT_RETRIES, DEFAULT_TARGET, DEFAULT_TIMEOUT, REPORT_TIMEOUT
from recsys_client._version import __version__
from recsys_client.client import RecsysClient
from recsys_client.errors import RecsysError
from recsys_client.types import (
    EVENT_TYPES,
    ExperimentReport,
    Interaction,
    Interval,
    Item,
    Recommendation,
)

TITLE_WIDTH = 48
EXPLANATION_WIDTH = 100


# --- formatting -----------------------------------------------------------------------------


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """An aligned plain-text table; columns in ``right`` are right-aligned, the last column is
    not padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    last = len(headers) - 1

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if i in right:
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell if i == last else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _items_table(items: Sequence[Recommendation], explain: bool) -> str:
    headers = ["rank", "item", "title", "score", "confidence"]
    if explain:
        headers.append("explanation")
    rows = []
    for rank, rec in enumerate(items, 1):
        row = [
            str(rank),
            rec.item_id,
            _clip(rec.title, TITLE_WIDTH),
            f"{rec.score:.4f}",
            f"{rec.confidence:.2f}",
        ]
        if explain:
            text = rec.explanation.text if rec.explanation else ""
            row.append(_clip(text, EXPLANATION_WIDTH) or "-")
        rows.append(row)
    return format_table(headers, rows, right={0, 3, 4})


def _when(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if dt else "-"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """``value`` with nan and infinities as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    print(json.dumps(_finite(value), indent=2, default=_json_default, ensure_ascii=False))


# --- commands -------------------------------------------------------------------------------


def _recommend(client: RecsysClient, a: argparse.Namespace) -> int:
    result = client.recommend(
        a.user,
        a.k,
        model=a.model,
        exclude=a.exclude,
        allow=a.allow,
        recent=a.recent,
        explain=a.explain,
        diversity=a.diversity,
    )
    if a.json:
        _print_json(result)
        return 0
    head = f"user {result.user_id}: model {result.model or '-'}"
    head += f" (version {result.model_version or '-'}), tier {result.fallback_tier}"
    if result.experiment:
        head += f", experiment {result.experiment}/{result.variant or '-'}"
    print(head)
    print(_items_table(result.items, a.explain) if result.items else "no recommendations")
    return 0


def _similar(client: RecsysClient, a: argparse.Namespace) -> int:
    result = client.similar_items(a.item, a.k, a.model)
    if a.json:
        _print_json(result)
        return 0
    print(
        f"items similar to {result.item_id}: model {result.model or '-'}"
        f" (version {result.model_version or '-'})"
    )
    print(_items_table(result.items, explain=False) if result.items else "no similar items")
    return 0


def _models(client: RecsysClient, a: argparse.Namespace) -> int:
    result = client.list_models()
    if a.json:
        _print_json(result)
        return 0
    print(f"artifact version {result.version or '-'}, default model {result.default_model or '-'}")
    rows = []
    for m in result.models:
        ndcg = m.metrics.get("ndcg@10")
        rows.append(
            [m.name, m.version, _when(m.trained_at), "-" if ndcg is None else f"{ndcg:.4f}"]
        )
    if rows:
        print(format_table(["name", "version", "trained_at", "ndcg@10"], rows, right={3}))
    else:
        print("no models loaded")
    return 0


def _record(client: RecsysClient, a: argparse.Namespace) -> int:
    event = Interaction.create(
        a.user,
        a.item,
        a.event,
        timestamp=a.time,
        rating=a.rating,
        event_id=a.event_id,
        recommendation_id=a.recommendation_id,
        position=a.position,
    )
    result = client.record_interactions([event])
    if a.json:
        _print_json({**dataclasses.asdict(result), "event_id": event.event_id})
        return 0
    print(f"recorded {result.recorded}, duplicates {result.duplicates} (event_id {event.event_id})")
    return 0


def _reload(client: RecsysClient, a: argparse.Namespace) -> int:
    result = client.reload_models()
    if a.json:
        _print_json(result)
        return 0
    line = f"version {result.version or '-'} ({'changed' if result.changed else 'unchanged'})"
    print(line + (f": {result.message}" if result.message else ""))
    return 0


def _health(client: RecsysClient, a: argparse.Namespace) -> int:
    status = client.health(a.service)
    if a.json:
        _print_json({"service": a.service, "status": status})
    else:
        print(status)
    return 0 if status == "SERVING" else 1


def _upsert_item(client: RecsysClient, a: argparse.Namespace) -> int:
    item = Item(a.item, a.title, a.categories, dict(a.attr), a.available)
    result = client.upsert_items([item])
    if a.json:
        _print_json(result)
    else:
        print(f"changed {result.changed}, unchanged {result.unchanged}")
    return 0


def _set_availability(client: RecsysClient, a: argparse.Namespace) -> int:
    result = client.set_item_availability(a.items, a.available)
    if a.json:
        _print_json(result)
    else:
        print(f"changed {result.changed}, unchanged {result.unchanged}")
    return 0


def _item_rows(items: Sequence[Item]) -> str:
    rows = [
        [
            i.item_id,
            _clip(i.title, TITLE_WIDTH),
            "|".join(i.categories) or "-",
            "yes" if i.available else "no",
            "yes" if i.in_model else "no",
        ]
        for i in items
    ]
    return format_table(["item", "title", "categories", "available", "in_model"], rows, set())


def _item(client: RecsysClient, a: argparse.Namespace) -> int:
    item = client.get_item(a.item)
    if a.json:
        _print_json(item)
        return 0
    print(_item_rows([item]))
    for key, value in sorted(item.attributes.items()):
        print(f"  {key} = {value}")
    return 0


def _items(client: RecsysClient, a: argparse.Namespace) -> int:
    page = client.list_items(a.page_size, a.page_token, available=a.available)
    if a.json:
        _print_json(page)
        return 0
    print(_item_rows(page.items) if page.items else "no items")
    if page.next_page_token:
        print(f"next page: --page-token {page.next_page_token}")
    return 0


def _history(client: RecsysClient, a: argparse.Namespace) -> int:
    h = client.user_history(a.user, a.limit)
    if a.json:
        _print_json(h)
        return 0
    print(f"user {h.user_id}: model version {h.model_version or '-'}")
    rows = [
        [
            e.item_id,
            _clip(e.title, TITLE_WIDTH),
            e.event_type,
            _when(e.timestamp),
            "yes" if e.trained else "no",
        ]
        for e in h.events
    ]
    print(
        format_table(["item", "title", "event", "time", "trained"], rows, set())
        if rows
        else "no stored events"
    )
    rows = [[t.item_id, _clip(t.title, TITLE_WIDTH), f"{t.weight:.2f}"] for t in h.training_items]
    if rows:
        print("training history:")
        print(format_table(["item", "title", "weight"], rows, {2}))
    return 0


def _num(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "-"


def _iv(iv: Interval, spec: str) -> str:
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return "-"
    return f"[{iv.low:{spec}}, {iv.high:{spec}}]"


#: How each metric's values and differences are printed.
METRIC_FORMAT = {"ctr": ".4f", "conversions_per_user": ".3f", "value_per_user": ".3f"}


def format_report(r: ExperimentReport) -> str:
    """The report as text: variants, comparisons with the control, the sample-ratio check
    (ALARM on a mismatch) and the interleaving preference."""
    out = [
        f"experiment {r.experiment} ({r.kind}), control {r.control},"
        f" attribution window {r.attribution_hours:g} h, generated {_when(r.generated_at)}"
    ]
    rows = [
        [
            v.variant,
            v.model,
            f"{v.share:.2f}",
            str(v.users),
            str(v.impressions),
            str(v.clicks),
            _num(v.ctr, ".4f"),
            _num(v.conversions_per_user, ".3f"),
            _num(v.value_per_user, ".3f"),
        ]
        for v in r.variants
    ]
    headers = ["variant", "model", "share", "users", "impressions", "clicks", "ctr"]
    out.append(format_table([*headers, "conv/user", "value/user"], rows, set(range(2, 9))))
    if r.comparisons:
        rows = []
        for c in r.comparisons:
            f = METRIC_FORMAT.get(c.metric, ".4f")
            rel = _num(100 * c.relative_difference, "+.1f")
            rows.append(
                [
                    c.variant,
                    c.metric,
                    _num(c.control_value, f),
                    _num(c.variant_value, f),
                    _num(c.difference, "+" + f) + (f" ({rel}%)" if rel != "-" else ""),
                    _iv(c.ci95, f),
                    _iv(c.always_valid, f),
                    _num(c.p_value, ".4f"),
                    "yes" if c.significant else "no",
                    _num(100 * c.mde_relative, ".1f")
                    + ("%" if math.isfinite(c.mde_relative) else ""),
                ]
            )
        headers = ["variant", "metric", "control", "value", "difference", "95% interval"]
        headers += ["always-valid 95%", "p", "significant", "mde"]
        out += ["", "against the control:", format_table(headers, rows, {2, 3, 4, 7, 9})]
    sr = r.sample_ratio
    if sr is not None:
        observed = "/".join(str(o) for o in sr.observed)
        expected = "/".join(_num(e, ".2f") for e in sr.expected_shares)
        line = f"sample ratio: users {observed}, expected shares {expected},"
        line += f" chi-square {_num(sr.chi_square, '.2f')}, p {_num(sr.p_value, '.4g')}: "
        line += "ALARM: sample ratio mismatch (p < 0.001)" if sr.mismatch else "ok"
        out += ["", line]
    il = r.interleaving
    if il is not None:
        out += [
            "",
            f"interleaving {il.model_a} (a) vs {il.model_b} (b): wins a {il.wins_a},"
            f" wins b {il.wins_b}, ties {il.ties}",
            f"preference for a {_num(il.preference_a, '.3f')}, 95% {_iv(il.ci95, '.3f')},"
            f" always-valid {_iv(il.always_valid, '.3f')}, p {_num(il.p_value, '.4g')}",
        ]
    out += [
        "",
        f"impressions dropped under overload since the server started: {r.impressions_dropped}",
    ]
    return "\n".join(out)


def _experiment_report(client: RecsysClient, a: argparse.Namespace) -> int:
    r = client.experiment_report(a.name, timeout=REPORT_TIMEOUT if a.timeout is None else a.timeout)
    if a.json:
        _print_json(r)
    else:
        print(format_report(r))
    return 0


# --- argument parsing -----------------------------------------------------------------------


def _id_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _timestamp(text: str) -> datetime | float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not Unix seconds or an ISO 8601 time: {text!r}"
        ) from None


def _attribute(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _availability(parser: argparse.ArgumentParser, required: bool) -> None:
    g = parser.add_mutually_exclusive_group(required=required)
    g.add_argument("--available", dest="available", action="store_const", const=True)
    g.add_argument("--unavailable", dest="available", action="store_const", const=False)
    parser.set_defaults(available=None)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(
        prog="recsys", description="Query a recsys-engine server over gRPC."
    )
    p.add_argument(
        "--target",
        default=env.get("RECSYS_TARGET") or DEFAULT_TARGET,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="server address, several replicas comma-separated, or dns:///NAME:PORT "
        "(default: $RECSYS_TARGET or %(default)s)",
    )
    p.add_argument(
        "--token", default=env.get("RECSYS_TOKEN") or None, help="bearer token ($RECSYS_TOKEN)"
    )
    p.add_argument("--tls-root-cert", metavar="PEM", help="connect with TLS using this root cert")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"deadline in seconds ({DEFAULT_TIMEOUT:g}; experiments report: {REPORT_TIMEOUT:g})",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help="retries of an idempotent call when the server is unavailable, on another "
        "replica when there are several (0: none; %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[..., int], help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help, description=help)
        parser.set_defaults(run=run)
        return parser

    c = command("recommend", _recommend, "top-k recommendations for a user")
    c.add_argument("--user", required=True)
    c.add_argument("-k", "--k", type=int, default=10)
    c.add_argument("--model", help="a loaded model (`recsys models` lists them)")
    c.add_argument("--explain", action="store_true", help="explain each recommendation")
    c.add_argument(
        "--diversity",
        type=float,
        default=0.0,
        metavar="0..1",
        help="re-rank for variety: 0 (off, default) to 1 (least similar items)",
    )
    for name, what in [
        ("recent", "session context: recently seen items"),
        ("exclude", "items never to recommend"),
        ("allow", "only recommend among these items"),
    ]:
        c.add_argument(f"--{name}", type=_id_list, default=[], metavar="A,B", help=what)

    c = command("similar", _similar, "items similar to an item")
    c.add_argument("--item", required=True)
    c.add_argument("-k", "--k", type=int, default=10)
    c.add_argument("--model", help="a model with item similarity (the server's default: item_cf)")

    command("models", _models, "the loaded models and their offline metrics")

    c = command("record", _record, "record one interaction")
    c.add_argument("--user", required=True)
    c.add_argument("--item", required=True)
    c.add_argument("--event", required=True, choices=EVENT_TYPES)
    c.add_argument("--rating", type=float, help="for --event rating")
    c.add_argument("--event-id", help="idempotency key (default: a fresh uuid4)")
    c.add_argument("--time", type=_timestamp, help="Unix seconds or ISO 8601 (default: now)")
    c.add_argument(
        "--recommendation-id", help="the recommendation the event came from (experiment reports)"
    )
    c.add_argument("--position", type=int, help="the item's 1-based position in it")

    command("reload", _reload, "admin: look for a new model artifact version now")

    c = command("upsert-item", _upsert_item, "add or replace a catalogue item (write token)")
    c.add_argument("--item", required=True)
    c.add_argument("--title", default="")
    c.add_argument("--categories", type=_id_list, default=[], metavar="A,B")
    c.add_argument(
        "--attr",
        type=_attribute,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an attribute (repeatable)",
    )
    _availability(c, required=False)

    c = command("set-availability", _set_availability, "make items (un)available (write token)")
    c.add_argument("--items", type=_id_list, required=True, metavar="A,B")
    _availability(c, required=True)

    c = command("item", _item, "one item of the live catalogue")
    c.add_argument("--item", required=True)

    c = command("items", _items, "the live catalogue, a page at a time")
    c.add_argument("--page-size", type=int, default=100)
    c.add_argument("--page-token", default="")
    _availability(c, required=False)

    c = command("history", _history, "a user's stored events and training history")
    c.add_argument("--user", required=True)
    c.add_argument("--limit", type=int, default=100)

    c = sub.add_parser("experiments", help="experiment reports", description="Experiment reports.")
    reports = c.add_subparsers(dest="experiments_command", required=True, metavar="COMMAND")
    r = reports.add_parser(
        "report",
        help="an experiment's report",
        description="Per variant: users, impressions, CTR, conversions and value per user; "
        "each variant against the control with 95%% intervals; the sample-ratio check; the "
        "interleaving preference.",
    )
    r.add_argument("name", help="an experiment of the server's configuration")
    r.set_defaults(run=_experiment_report)

    c = command("health", _health, "the server's health status (exit 0 only when SERVING)")
    c.add_argument("--service", default="", help="service name (default: the whole server)")
    return p


def _error(message: str) -> int:
    print(f"recsys: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: sys.argv[1:]) and returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors, --help, --version
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        with RecsysClient(
            args.target,
            token=args.token,
            tls_root_cert=args.tls_root_cert,
            timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
            retries=args.retries,
        ) as client:
            return args.run(client, args)
    except RecsysError as e:
        return _error(f"{e.code.name}: {e.details or 'no details'} (target {args.target})")
    except (OSError, ValueError) as e:
        return _error(str(e) or type(e).__name__)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

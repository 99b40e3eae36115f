"""Experiment reports and attribution fields through both clients and the ``recsys`` command,
against the scripted test server (conftest.py)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from recsys_client import (
    ExperimentReport,
    Interaction,
    InterleavingResult,
    Interval,
    InvalidArgument,
    MetricComparison,
    NotFound,
    SampleRatio,
    VariantSummary,
)
from recsys_client.cli import main


def test_experiment_report_is_typed(fake, make_client):
    r = make_client(fake.address).experiment_report("blend")
    assert isinstance(r, ExperimentReport)
    assert (r.experiment, r.kind, r.control, r.attribution_hours) == ("blend", "ab", "control", 24)
    assert r.generated_at == datetime(2024, 6, 1, 12, tzinfo=UTC)
    assert r.impressions_dropped == 2
    assert r.variants[0] == VariantSummary(
        "control", "hybrid", 0.5, 200, 800, 96, 20, 45.5, 0.012, 0.1, 0.2275
    )
    assert r.variant("more-svd").users == 1 and r.variant("nope") is None
    assert r.comparisons[0] == MetricComparison(
        metric="ctr",
        variant="more-svd",
        control_value=0.012,
        variant_value=0.015,
        difference=0.003,
        relative_difference=0.25,
        ci95=Interval(0.001, 0.005),
        always_valid=Interval(-0.0005, 0.0065),
        p_value=0.0125,
        significant=False,
        mde_relative=0.375,
    )
    nan = r.comparisons[1]
    assert math.isnan(nan.ci95.low) and math.isnan(nan.p_value) and math.isnan(nan.mde_relative)
    assert r.sample_ratio == SampleRatio([200, 1], [0.5, 0.5], 0.5, 0.5, False)
    assert r.interleaving is None
    (seen,) = fake.servicer.calls_of("GetExperimentReport")
    assert seen.request.experiment == "blend"


def test_interleaving_report(fake, make_client):
    r = make_client(fake.address).experiment_report("duel")
    assert r.kind == "interleave" and r.sample_ratio is None and r.comparisons == []
    assert r.generated_at is None
    assert r.interleaving == InterleavingResult(
        "svd", "item_cf", 6, 2, 1, 0.75, Interval(0.5, 1.0), Interval(0.375, 1.125), 0.03125
    )


def test_unknown_experiment_is_not_found(fake, make_client):
    client = make_client(fake.address)
    with pytest.raises(NotFound, match="'nope' is not configured"):
        client.experiment_report("nope")
    with pytest.raises(InvalidArgument, match="experiment"):
        client.experiment_report("")
    assert len(fake.servicer.calls_of("GetExperimentReport")) == 1


def test_recommendation_id_round_trip(fake, make_client):
    client = make_client(fake.address)
    result = client.recommend("u7", 3)
    assert result.recommendation_id == "rec-u7"
    click = Interaction.create(
        "u7", "i2", "click", recommendation_id=result.recommendation_id, position=2
    )
    plain = Interaction.create("u7", "i3", "click")
    assert client.record_interactions([click, plain]).recorded == 2
    sent = fake.servicer.stored
    assert (sent[click.event_id].recommendation_id, sent[click.event_id].position) == (
        "rec-u7",
        2,
    )
    assert (sent[plain.event_id].recommendation_id, sent[plain.event_id].position) == ("", 0)


@pytest.mark.parametrize("position", [0, -1, 1.5, True])
def test_bad_position_is_refused_before_sending(fake, make_client, position):
    client = make_client(fake.address)
    bad = Interaction.create("u", "i", "click", recommendation_id="r", position=position)
    with pytest.raises(InvalidArgument, match="position"):
        client.record_interactions([bad])
    assert fake.servicer.calls_of("RecordInteractions") == []


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("RECSYS_TARGET", raising=False)
    monkeypatch.delenv("RECSYS_TOKEN", raising=False)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report_table(fake, capsys):
    code, out, err = run(capsys, "--target", fake.address, "experiments", "report", "blend")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        "experiment blend (ab), control control, attribution window 24 h,"
        " generated 2024-06-01 12:00:00Z"
    )
    assert lines[1].split() == [
        "variant",
        "model",
        "share",
        "users",
        "impressions",
        "clicks",
        "ctr",
        "conv/user",
        "value/user",
    ]
    assert lines[3].split() == [
        "control",
        "hybrid",
        "0.50",
        "200",
        "800",
        "96",
        "0.0120",
        "0.100",
        "0.228",
    ]
    assert lines[4].split()[:4] == ["more-svd", "hybrid", "0.50", "1"]
    at = lines.index("against the control:")
    header, _, ctr, value = lines[at + 1 : at + 5]
    assert header.split()[:6] == ["variant", "metric", "control", "value", "difference", "95%"]
    assert ctr.split() == [
        "more-svd",
        "ctr",
        "0.0120",
        "0.0150",
        "+0.0030",
        "(+25.0%)",
        "[0.0010,",
        "0.0050]",
        "[-0.0005,",
        "0.0065]",
        "0.0125",
        "no",
        "37.5%",
    ]
    # Too few users: no intervals, p or MDE, shown as "-".
    assert value.split() == [
        "more-svd",
        "value_per_user",
        "0.228",
        "0.000",
        "-0.228",
        "(-100.0%)",
        "-",
        "-",
        "-",
        "no",
        "-",
    ]
    assert "sample ratio: users 200/1, expected shares 0.50/0.50, chi-square 0.50, p 0.5: ok" in (
        lines
    )
    assert lines[-1] == "impressions dropped under overload since the server started: 2"
    assert "ALARM" not in out


def test_cli_report_sample_ratio_alarm(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "experiments", "report", "skewed")
    assert code == 0
    (line,) = [ln for ln in out.splitlines() if ln.startswith("sample ratio")]
    assert line.endswith("p 0.00025: ALARM: sample ratio mismatch (p < 0.001)")


def test_cli_report_interleaving(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "experiments", "report", "duel")
    assert code == 0
    lines = out.splitlines()
    assert "against the control:" not in lines and not any(
        ln.startswith("sample ratio") for ln in lines
    )
    assert "interleaving svd (a) vs item_cf (b): wins a 6, wins b 2, ties 1" in lines
    assert (
        "preference for a 0.750, 95% [0.500, 1.000], always-valid [0.375, 1.125], p 0.03125"
        in lines
    )


def test_cli_report_json_has_no_nan(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "--json", "experiments", "report", "blend")
    assert code == 0
    data = json.loads(out)  # strict: NaN would not parse as standard JSON below
    json.dumps(data, allow_nan=False)
    assert data["variants"][0]["users"] == 200
    assert data["comparisons"][0]["ci95"] == {"low": 0.001, "high": 0.005}
    assert data["comparisons"][1]["p_value"] is None
    assert data["comparisons"][1]["ci95"] == {"low": None, "high": None}
    assert data["sample_ratio"]["mismatch"] is False and data["interleaving"] is None


def test_cli_report_unknown_experiment(fake, capsys):
    code, out, err = run(capsys, "--target", fake.address, "experiments", "report", "nope")
    assert (code, out) == (1, "")
    assert "NOT_FOUND" in err and "'nope' is not configured" in err


def test_cli_report_needs_a_name(capsys):
    code, _, err = run(capsys, "experiments", "report")
    assert code == 2 and "name" in err


def test_cli_record_with_recommendation_id(fake, capsys):
    code, out, _ = run(
        capsys,
        "--target", fake.address,
        "record", "--user", "u", "--item", "i4", "--event", "click",
        "--recommendation-id", "rec-u", "--position", "4", "--event-id", "ev1",
    )  # fmt: skip
    assert code == 0 and out.startswith("recorded 1")
    e = fake.servicer.stored["ev1"]
    assert (e.recommendation_id, e.position, e.item_id) == ("rec-u", 4, "i4")


def test_report_deadline_defaults_to_a_minute(fake, make_client, capsys):
    make_client(fake.address).experiment_report("blend")  # the client's default is 2 s
    assert run(capsys, "--target", fake.address, "experiments", "report", "blend")[0] == 0
    argv = ["--target", fake.address, "--timeout", "5", "experiments", "report", "blend"]
    assert run(capsys, *argv)[0] == 0
    sdk, cli, given = (s.time_remaining for s in fake.servicer.calls_of("GetExperimentReport"))
    assert 30 < sdk <= 61 and 30 < cli <= 61 and given <= 5.1
    assert run(capsys, "--target", fake.address, "models")[0] == 0
    assert fake.servicer.calls_of("ListModels")[0].time_remaining <= 2.1

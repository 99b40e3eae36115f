"""The ``recsys`` command line, run in-process against the test server."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest

from recsys_client.cli import format_table, main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("RECSYS_TARGET", raising=False)
    monkeypatch.delenv("RECSYS_TOKEN", raising=False)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def right_cell(line: str, header: str, name: str) -> str:
    """The cell of ``line`` in the right-aligned column headed ``name``: the word ending where
    the header cell ends."""
    end = header.index(name) + len(name)
    assert line[end : end + 1] in {"", " "}
    return line[:end].split()[-1]


def test_recommend_prints_an_aligned_table(fake, capsys):
    code, out, err = run(capsys, "--target", fake.address, "recommend", "--user", "42", "--k", "3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "user 42: model hybrid (version v1), tier personalized"
    header, rule, *rows = lines[1:]
    assert header.split() == ["rank", "item", "title", "score", "confidence"]
    assert set(rule) <= {"-", " "}
    assert len(rows) == 3
    assert rows[0].split() == ["1", "i1", "Item", "i1", "0.9688", "0.52"]
    assert rows[2].split()[:2] == ["3", "i3"]
    # right-aligned numeric columns end where their header ends
    for row in rows:
        assert len(row) == len(header)
    assert [right_cell(r, header, "score") for r in rows] == ["0.9688", "0.9375", "0.9062"]
    assert [right_cell(r, header, "confidence") for r in rows] == ["0.52", "0.53", "0.55"]
    assert [right_cell(r, header, "rank") for r in rows] == ["1", "2", "3"]
    (seen,) = fake.servicer.calls_of("Recommend")
    assert (seen.request.user_id, seen.request.k, seen.request.explain) == ("42", 3, False)


def test_recommend_with_explanations_and_options(fake, capsys):
    code, out, _ = run(
        capsys,
        "--target", fake.address,
        "recommend", "--user", "ab:7", "-k", "5", "--model", "item_cf", "--explain",
        "--recent", "i9, i8,", "--exclude", "i1", "--allow", "i1,i2,i3,i4,i5,i6,i7",
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert "experiment exp1/B" in lines[0] and "model item_cf" in lines[0]
    assert lines[1].split() == ["rank", "item", "title", "score", "confidence", "explanation"]
    assert "Because you watched Item i9" in lines[3]
    assert "Trending: #4 this week" in lines[6]
    assert [row.split()[1] for row in lines[3:]] == ["i2", "i3", "i4", "i5", "i6"]
    (seen,) = fake.servicer.calls_of("Recommend")
    assert list(seen.request.recent_item_ids) == ["i9", "i8"]
    assert list(seen.request.exclude_item_ids) == ["i1"]
    assert seen.request.model == "item_cf" and seen.request.explain
    assert seen.request.diversity == 0.0


def test_recommend_diversity(fake, capsys):
    code, _, _ = run(
        capsys, "--target", fake.address, "recommend", "--user", "u", "--diversity", "0.5"
    )
    assert code == 0
    (seen,) = fake.servicer.calls_of("Recommend")
    assert seen.request.diversity == 0.5


def test_recommend_json(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "--json", "recommend", "--user", "u")
    assert code == 0
    data = json.loads(out)
    assert data["user_id"] == "u" and len(data["items"]) == 10
    assert data["items"][0]["item_id"] == "i1"


def test_similar(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "similar", "--item", "i3", "--k", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "items similar to i3: model item_cf (version v1)"
    assert [r.split()[1] for r in lines[3:]] == ["i1", "i2"]


def test_models_table(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "artifact version v1, default model item_cf"
    assert lines[1].split() == ["name", "version", "trained_at", "ndcg@10"]
    assert lines[3].split() == ["item_cf", "v1", "2024-06-01", "12:00:00Z", "0.3125"]
    assert lines[4].split() == ["popularity", "v1", "-", "-"]
    assert lines[3].index("v1") == lines[4].index("v1") == lines[1].index("version")


def test_models_json_has_datetimes_as_iso(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "--json", "models")
    assert code == 0
    data = json.loads(out)
    assert data["models"][0]["trained_at"] == "2024-06-01T12:00:00+00:00"


def test_record(fake, capsys):
    argv = ["--target", fake.address, "--token", "w", "record", "--user", "u1", "--item", "i1"]
    code, out, _ = run(capsys, *argv, "--event", "click", "--event-id", "ev-1", "--time", "1.5")
    assert code == 0
    assert out.strip() == "recorded 1, duplicates 0 (event_id ev-1)"
    stored = fake.servicer.stored["ev-1"]
    assert (stored.user_id, stored.item_id, stored.event_type) == ("u1", "i1", "click")
    assert (stored.timestamp.seconds, stored.timestamp.nanos) == (1, 500_000_000)
    assert fake.recorder.seen[-1].metadata["authorization"] == "Bearer w"
    code, out, _ = run(capsys, *argv, "--event", "click", "--event-id", "ev-1")
    assert out.strip() == "recorded 0, duplicates 1 (event_id ev-1)"
    code, out, _ = run(
        capsys, *argv, "--event", "rating", "--rating", "4.5", "--time", "2024-06-01T12:00:00Z"
    )
    assert code == 0 and out.startswith("recorded 1, duplicates 0 (event_id ")
    assert len(fake.servicer.stored) == 2


def test_reload(fake, capsys):
    code, out, _ = run(capsys, "--target", fake.address, "reload")
    assert (code, out.strip()) == (0, "version v2 (changed): v1 -> v2")


def test_health_exit_status(fake, capsys):
    assert run(capsys, "--target", fake.address, "health") == (0, "SERVING\n", "")
    code, out, _ = run(capsys, "--target", fake.address, "health", "--service", "draining")
    assert (code, out) == (1, "NOT_SERVING\n")


def test_environment_supplies_target_and_token(fake, capsys, monkeypatch):
    monkeypatch.setenv("RECSYS_TARGET", fake.address)
    monkeypatch.setenv("RECSYS_TOKEN", "from-env")
    assert run(capsys, "health")[0] == 0
    assert fake.recorder.seen[-1].metadata["authorization"] == "Bearer from-env"


# --- errors: one line on stderr, no traceback, non-zero exit ------------------------------------


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.count("\n") == 1 and err.startswith("recsys: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INTERNAL,
    ],
    ids=lambda c: c.name,
)
def test_server_errors(fake, capsys, code):
    rc, out, err = run(capsys, "--target", fake.address, "recommend", "--user", f"fail:{code.name}")
    assert rc == 1 and out == ""
    assert_one_line_error(err, f"{code.name}: scripted failure", fake.address)


def test_unreachable_server(dead_address, capsys):
    rc, out, err = run(capsys, "--target", dead_address, "--retries", "1", "models")
    assert rc == 1 and out == ""
    assert_one_line_error(err, "UNAVAILABLE")


def test_several_targets(fake, dead_address, capsys, monkeypatch):
    # A replica that is down does not fail the command: round-robin uses the one that is up.
    rc, out, _ = run(capsys, "--target", f"{dead_address},{fake.address}", "health")
    assert (rc, out) == (0, "SERVING\n")
    monkeypatch.setenv("RECSYS_TARGET", f"{fake.address}, {dead_address}")
    assert run(capsys, "models")[0] == 0
    assert fake.servicer.calls_of("ListModels")


@pytest.mark.parametrize(
    ("target", "named"),
    [("127.0.0.1:1,nope", "'nope'"), ("127.0.0.1:1,127.0.0.1:1", "'127.0.0.1:1' is given twice")],
)
def test_bad_target_is_named(capsys, target, named):
    rc, out, err = run(capsys, "--target", target, "models")
    assert rc == 1 and out == ""
    assert_one_line_error(err, named)


def test_deadline(fake, capsys):
    argv = ["--target", fake.address, "--timeout", "0.2", "recommend", "--user", "sleep:3"]
    rc, _, err = run(capsys, *argv)
    assert rc == 1
    assert_one_line_error(err, "DEADLINE_EXCEEDED")


@pytest.mark.parametrize(
    "argv",
    [
        ["recommend", "--user", "u", "--k", "0"],
        ["recommend", "--user", "u", "--diversity", "1.5"],
        ["--timeout", "-1", "models"],
        ["--tls-root-cert", "/nonexistent.pem", "models"],
        ["record", "--user", "u", "--item", "i", "--event", "click", "--rating", "3"],
    ],
)
def test_bad_values_are_one_line_errors(fake, capsys, argv):
    rc, out, err = run(capsys, "--target", fake.address, *argv)
    assert rc == 1 and out == ""
    assert_one_line_error(err)
    assert fake.recorder.seen == []


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["recommend"],
        ["frobnicate"],
        ["record", "--user", "u", "--item", "i", "--event", "teleport"],
        ["record", "--user", "u", "--item", "i", "--event", "view", "--time", "yesterday"],
        ["recommend", "--user", "u", "--k", "many"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert "Traceback" not in err and "usage: recsys" in err


def test_help_exits_0(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for command in ("recommend", "similar", "models", "record", "health"):
        assert command in out


def test_format_table():
    table = format_table(["a", "num", "last"], [["xyz", "1", "t"], ["b", "100", "longer"]], {1})
    assert table.splitlines() == [
        "a    num  last",
        "---  ---  ------",
        "xyz    1  t",
        "b    100  longer",
    ]


def test_console_entry_point_module(fake):
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_client.cli", "--target", fake.address, "health"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "SERVING\n", "")

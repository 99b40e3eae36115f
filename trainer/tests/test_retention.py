"""Retention: refresh archives the events every kept version folded in and that are older than
the live window, to Parquet, then deletes them from the store; later refreshes train on the
archive plus the hot table. Real stores (SQLite file, PostgreSQL database), real files; the
window is aged with the store's clock (``stored_at``) and an explicit ``now``, never by
waiting."""

from __future__ import annotations

import asyncio
import fcntl
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recsys_core import artifacts
from recsys_core.datastore import StoreUnavailable, open_store
from recsys_core.datastore.base import ARCHIVE_SCHEMA, DataStore
from recsys_core.events import Event
from recsys_trainer import retention
from recsys_trainer.cli import main, stored_events

DAY = 86400.0
NOW = 1_800_000_000.0  # the clock of the module-level tests
MODELS = ["--models", "popularity,item_cf", "--no-tune"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("retention") / "data" / "interactions.tsv"
    args = ["generate", "--out", str(out), "--users", "200", "--items", "80"]
    assert main([*args, "--interactions", "3000", "--seed", "3"]) == 0
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    return request.getfixturevalue("postgres_dsn")


def record(url: str, events: list[Event], stored_at: float) -> None:
    """Append ``events`` as if the server had stored them at ``stored_at``."""
    with open_store(url, clock=lambda: stored_at) as store:
        asyncio.run(store.append(events))


def clicks(prefix: str, user: str, n: int, item: str = "i0001") -> list[Event]:
    return [Event(f"{prefix}{k}", user, item, "click", 1.7e9 + k) for k in range(n)]


def table(url: str, with_stored_at: bool = True) -> pl.DataFrame:
    with open_store(url) as store:
        return store.events_frame(with_stored_at=with_stored_at)


def fake_version(root: Path, n: int, params: dict) -> str:
    """A version directory as far as retention looks: a valid name and a manifest."""
    name = f"20260101T0000{n:02d}.000000Z-abcdef"
    (root / name).mkdir(parents=True)
    (root / name / artifacts.MANIFEST).write_text(json.dumps({"params": params}))
    return name


def apply(url: str, root: Path, archive: Path, now: float = NOW, **kw) -> retention.Report:
    with open_store(url) as store:
        return retention.apply(store, root, archive, 7 * DAY, now, **kw)


def latest(root: Path) -> artifacts.LoadedArtifacts:
    return artifacts.load_version(root / artifacts.latest_version(root))


# -- refresh end to end ---------------------------------------------------------------------


def test_refresh_archives_old_folded_events_and_keeps_training_on_them(data, tmp_path, url, capsys):
    now = time.time()
    record(url, clicks("old", "archived-user", 5), now - 10 * DAY)
    record(url, clicks("new", "live-user", 3, "i0002"), now - 1 * DAY)
    old_rows = table(url).head(5)
    out, archive = tmp_path / "art", tmp_path / "events-archive"
    args = ["refresh", "--interactions", str(data), "--store", url, "--out", str(out), *MODELS]

    assert main(args) == 0
    printed = capsys.readouterr().out
    first = latest(out)
    assert first.manifest["params"]["store_seq"] == 8
    assert "base data + 8 stored events (seq <= 8)" in printed
    seqs = old_rows["seq"].to_list()
    (file,) = sorted(archive.glob("*.parquet"))  # the default: <out>/../events-archive
    assert file.name == f"events-{seqs[0]:012d}-{seqs[-1]:012d}.parquet"
    assert (
        f"retention: archived 5 events seq {seqs[0]}..{seqs[-1]} to {file}, hot table now 3"
        in printed
    )
    # The file holds exactly the old rows, every column; the hot table lost exactly them.
    assert pl.read_parquet(file).equals(old_rows)
    assert pl.read_parquet(file).schema == pl.Schema(ARCHIVE_SCHEMA)
    assert table(url)["event_id"].to_list() == ["new0", "new1", "new2"]

    # The next refresh trains on the same events: base + archive + hot.
    assert main(args) == 0
    printed = capsys.readouterr().out
    second = latest(out)
    assert second.version != first.version
    assert "base data + 8 stored events (seq <= 8)" in printed
    assert second.manifest["params"]["store_seq"] == 8
    assert second.manifest["data_fingerprint"] == first.manifest["data_fingerprint"]
    assert "archived-user" in second.user_ids.tolist()
    user = second.user_ids.tolist().index("archived-user")
    item = second.item_ids.tolist().index("i0001")
    assert second.history[user, item] == pytest.approx(5 * 2.0)  # five clicks, weight 2 each
    assert "retention: nothing to archive" in printed and "hot table now 3" in printed
    assert len(list(archive.glob("*.parquet"))) == 1


def test_versions_without_a_store_cursor_block_retention(data, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/events.db"
    record(url, clicks("old", "archived-user", 4), time.time() - 30 * DAY)
    out = tmp_path / "art"
    common = ["--interactions", str(data), "--out", str(out), *MODELS]
    assert main(["train", *common, "--no-evaluate"]) == 0
    blocker = artifacts.latest_version(out)
    assert main(["refresh", *common, "--store", url]) == 0
    printed = capsys.readouterr().out
    assert (
        f"retention: nothing archived: version {blocker} has no store cursor (trained without "
        "the store), hot table now 4" in printed
    )
    assert table(url).height == 4 and not list((tmp_path / "events-archive").glob("*.parquet"))
    # Once that version is pruned (keep 1), every kept version has folded the events.
    assert main(["refresh", *common, "--store", url, "--set", "keep_versions=1"]) == 0
    assert artifacts.list_versions(out) == [artifacts.latest_version(out)]
    assert "retention: archived 4 events seq 1..4" in capsys.readouterr().out
    assert table(url).height == 0


def test_retention_off_and_a_custom_archive(data, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/events.db"
    record(url, clicks("old", "archived-user", 2), time.time() - 30 * DAY)
    common = ["refresh", "--interactions", str(data), "--store", url, "--out", str(tmp_path / "a")]
    assert main([*common, *MODELS, "--retention", "off"]) == 0
    assert "retention: off (the hot table keeps every event)" in capsys.readouterr().out
    assert table(url).height == 2
    archive = tmp_path / "elsewhere"
    assert main([*common, *MODELS, "--retention", "20d", "--archive", str(archive)]) == 0
    assert "archived 2 events" in capsys.readouterr().out
    assert [f.name for f in archive.glob("*.parquet")] == [
        "events-000000000001-000000000002.parquet"
    ]
    assert main([*common, *MODELS, "--retention", "soon"]) == 2
    assert "retention window 'soon'" in capsys.readouterr().err
    assert artifacts.latest_version(tmp_path / "a") is not None


# -- the rule, with an explicit clock --------------------------------------------------------


def test_only_events_at_or_below_every_kept_cursor_and_older_than_the_window(tmp_path, url):
    record(url, clicks("a", "u", 4), NOW - 8 * DAY)  # seq 1-4
    record(url, clicks("b", "u", 2), NOW - 7 * DAY)  # seq 5-6: exactly at the cutoff, kept
    record(url, clicks("c", "u", 2), NOW - 9 * DAY)  # seq 7-8: old but above a cursor
    root = tmp_path / "art"
    v1 = fake_version(root, 1, {"store_seq": 3})
    fake_version(root, 2, {"store_seq": 8})
    report = apply(url, root, tmp_path / "archive")
    assert (report.archived, report.first_seq, report.last_seq, report.cursor) == (3, 1, 3, 3)
    assert table(url)["event_id"].to_list() == ["a3", "b0", "b1", "c0", "c1"]
    # The oldest version now reads 8 (a cursor of the old log's import counts like store_seq).
    (root / v1 / artifacts.MANIFEST).write_text(json.dumps({"params": {"event_log_records": 8}}))
    report = apply(url, root, tmp_path / "archive")
    assert (report.archived, report.first_seq, report.last_seq) == (3, 4, 8)
    assert table(url)["event_id"].to_list() == ["b0", "b1"]
    assert apply(url, root, tmp_path / "archive", now=NOW + 1).archived == 2
    assert table(url).height == 0
    in_seq_order = ["a0", "a1", "a2", "a3", "b0", "b1", "c0", "c1"]  # whichever run moved them
    assert retention.read_archive(tmp_path / "archive")["event_id"].to_list() == in_seq_order


def test_an_unreadable_manifest_counts_as_no_cursor(tmp_path):
    url = f"sqlite:///{tmp_path}/events.db"
    record(url, clicks("a", "u", 2), NOW - 30 * DAY)
    root = tmp_path / "art"
    fake_version(root, 1, {"store_seq": 2})
    bad = fake_version(root, 2, {"store_seq": 2})
    (root / bad / artifacts.MANIFEST).write_text("{torn")
    report = apply(url, root, tmp_path / "archive")
    assert report.archived == 0 and report.blocked.startswith(f"version {bad} has no store cursor")
    assert apply(url, tmp_path / "empty", tmp_path / "archive").blocked.startswith(
        "no model version"
    )


def test_large_selections_are_split_into_files_of_max_rows(tmp_path, url):
    record(url, clicks("a", "u", 5), NOW - 30 * DAY)
    root = tmp_path / "art"
    fake_version(root, 1, {"store_seq": 5})
    report = apply(url, root, tmp_path / "archive", max_rows=2)
    names = [p.name for p in report.files]
    assert names == [
        "events-000000000001-000000000002.parquet",
        "events-000000000003-000000000004.parquet",
        "events-000000000005-000000000005.parquet",
    ]
    assert report.line().startswith(
        f"retention: archived 5 events seq 1..5 to 3 files in {tmp_path / 'archive'}"
    )
    assert retention.read_archive(tmp_path / "archive")["event_id"].to_list() == [
        f"a{k}" for k in range(5)
    ]


def test_an_interrupted_run_is_completed_by_the_next_one(tmp_path, url, monkeypatch):
    """The archive file is written, then the delete fails (as a crash there would leave it):
    the next run deletes exactly those rows and writes no second file; refresh meanwhile reads
    each event once."""
    record(url, clicks("a", "u", 4), NOW - 30 * DAY)
    record(url, clicks("b", "u", 2), NOW)
    root, archive = tmp_path / "art", tmp_path / "archive"
    fake_version(root, 1, {"store_seq": 6})
    before = table(url)

    def fail(*a, **kw):
        raise StoreUnavailable("the store went away")

    with monkeypatch.context() as m:
        m.setattr(DataStore, "delete_events", fail)
        with pytest.raises(StoreUnavailable):
            apply(url, root, archive)
    (file,) = archive.glob("*.parquet")
    written = file.stat()
    assert table(url).equals(before)  # nothing deleted
    frame, top = stored_events(url, archive)
    assert frame["event_id"].to_list() == ["a0", "a1", "a2", "a3", "b0", "b1"] and top == 6

    report = apply(url, root, archive)
    assert report.completed == 4 and report.archived == 0
    cutoff = datetime.fromtimestamp(NOW - 7 * DAY, UTC).isoformat(timespec="seconds")
    assert report.line() == (
        "retention: completed an interrupted run: deleted 4 archived events; nothing to "
        f"archive (no event with seq <= 6 stored before {cutoff}, 7d ago), hot table now 2"
    )
    assert [p.name for p in archive.glob("*.parquet")] == [file.name]
    assert file.stat().st_mtime_ns == written.st_mtime_ns and file.stat().st_ino == written.st_ino
    assert table(url)["event_id"].to_list() == ["b0", "b1"]
    again = apply(url, root, archive)  # idempotent
    assert (again.completed, again.archived, again.hot) == (0, 0, 2)


def test_a_stray_temp_file_is_removed_and_the_rows_archived_again(tmp_path):
    url = f"sqlite:///{tmp_path}/events.db"
    record(url, clicks("a", "u", 2), NOW - 30 * DAY)
    root, archive = tmp_path / "art", tmp_path / "archive"
    fake_version(root, 1, {"store_seq": 2})
    archive.mkdir()
    stray = archive / ".events-000000000001-000000000002.parquet.tmp"
    stray.write_bytes(b"torn")  # a crash before the rename
    report = apply(url, root, archive)
    assert report.archived == 2 and not stray.exists()
    assert len(pl.read_parquet(report.files[0])) == 2


def test_a_file_missing_hot_rows_of_its_range_deletes_nothing(tmp_path, url):
    record(url, clicks("a", "u", 3), NOW - 30 * DAY)
    root, archive = tmp_path / "art", tmp_path / "archive"
    fake_version(root, 1, {"store_seq": 3})
    archive.mkdir()
    partial = table(url).filter(pl.col("event_id") != "a1")
    bad = archive / "events-000000000001-000000000003.parquet"
    partial.write_parquet(bad, metadata={retention.STORED_BEFORE: repr(NOW)})
    with pytest.raises(retention.RetentionError, match="holds 1 events in its range") as info:
        apply(url, root, archive)
    assert str(info.value).endswith(
        "nothing deleted; every event of the file is still in the table: move it aside"
    )
    assert table(url).height == 3


def test_another_process_holding_the_archive_lock_skips_the_run(tmp_path):
    url = f"sqlite:///{tmp_path}/events.db"
    record(url, clicks("a", "u", 2), NOW - 30 * DAY)
    root, archive = tmp_path / "art", tmp_path / "archive"
    fake_version(root, 1, {"store_seq": 2})
    archive.mkdir()
    with (archive / retention.LOCK).open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        report = apply(url, root, archive)
    assert report.archived == 0 and report.blocked.startswith("another process is archiving")
    assert apply(url, root, archive).archived == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * DAY), ("12h", 43200), ("30m", 1800), ("90s", 90), ("2w", 14 * DAY), ("3600", 3600)],
)
def test_parse_window(text, seconds):
    assert retention.parse_window(text) == seconds


@pytest.mark.parametrize("text", ["off", "OFF", "0", "0d"])
def test_parse_window_off(text):
    assert retention.parse_window(text) == 0


@pytest.mark.parametrize("text", ["", "soon", "-1d", "inf", "nan", "7x"])
def test_parse_window_refuses(text):
    with pytest.raises(retention.RetentionError):
        retention.parse_window(text)


def test_an_id_stored_again_after_its_event_was_archived_counts_once(tmp_path, url):
    """UNIQUE(event_id) covers the hot table only: a client retrying an archived event stores
    it again. Training keeps the archived one; the cursor still covers the retry, so the
    server does not replay it on top."""
    record(url, clicks("a", "u", 2), NOW - 30 * DAY)
    root, archive = tmp_path / "art", tmp_path / "archive"
    fake_version(root, 1, {"store_seq": 2})
    assert apply(url, root, archive).archived == 2
    record(url, [Event("a0", "u", "i0009", "view", 1.0)], NOW)  # the same id: seq 3
    frame, top = stored_events(url, archive)
    assert frame.select("seq", "event_id", "item_id").rows() == [
        (1, "a0", "i0001"),
        (2, "a1", "i0001"),
    ]
    assert top == 3


def test_attribution_fields_are_archived_and_old_files_read_with_nulls(tmp_path, url):
    """Events keep recommendation_id and position through the archive; a file written before
    events had them (no such columns) reads back with nulls, beside a new one."""
    record(url, [Event("x", "u", "i0001", "click", 1.7e9, None, "r1", 4)], NOW - 30 * DAY)
    root, archive = tmp_path / "art", tmp_path / "archive"
    fake_version(root, 1, {"store_seq": 5})
    assert apply(url, root, archive).archived == 1  # seq 1
    columns = [k for k in ARCHIVE_SCHEMA if k not in ("recommendation_id", "position")]
    before = pl.DataFrame(
        [(2, "old", "u", "i0001", "click", 1.0, None, 1.0)],
        schema={k: ARCHIVE_SCHEMA[k] for k in columns},
        orient="row",
    )
    before.write_parquet(
        archive / "events-000000000002-000000000002.parquet",
        metadata={retention.STORED_BEFORE: repr(NOW)},
    )
    got = retention.read_archive(archive)
    assert got.schema == pl.Schema(ARCHIVE_SCHEMA)
    assert got.select("event_id", "recommendation_id", "position").rows() == [
        ("x", "r1", 4),
        ("old", None, None),
    ]
    frame, _ = stored_events(url, archive)
    assert frame["event_id"].to_list() == ["x", "old"]

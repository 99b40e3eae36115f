"""The old event log's reader and recovery, kept only to import old logs into the data store
(`recsys_server.old_log`): the record layout, reading segments in order, stopping at damage,
and recovery that sets damaged bytes aside instead of dropping them."""

import itertools
import json
import logging
import zlib

import pytest
from srv_support import old_record, write_old_segment

from recsys_core.events import Event
from recsys_server.old_log import HEADER, list_segments, read_events, recover


def ev(i: int, **kw) -> Event:
    fields = dict(event_id=f"e{i}", user_id=f"u{i % 7}", item_id=f"i{i % 11}", event_type="click")
    fields.update(kw)
    fields.setdefault("timestamp", 1_700_000_000.0 + i)
    return Event(**fields)


def write_segment(directory, index, events, tail=b""):
    return write_old_segment(directory, index, events, tail)


def corrupt_files(directory):
    return sorted(p for p in directory.iterdir() if ".corrupt-" in p.name)


# --- the record layout -------------------------------------------------------------------------


def test_reads_the_documented_layout_length_crc_then_compact_json(tmp_path):
    """Built by hand from the format doc, not by the test helper."""
    payload = json.dumps(
        {"event_id": "id-1", "user_id": "ü", "item_id": "i", "event_type": "rating",
         "timestamp": 12, "rating": 4, "from_a_newer_writer": 1},
        separators=(",", ":"), ensure_ascii=False,
    ).encode()  # fmt: skip
    unrated = b'{"event_id":"x","user_id":"u","item_id":"i","event_type":"view","timestamp":1}'
    data = b"".join(HEADER.pack(len(p), zlib.crc32(p)) + p for p in (payload, unrated))
    (tmp_path / "events-000001.log").write_bytes(data)
    first, second = read_events(tmp_path)
    assert first == Event("id-1", "ü", "i", "rating", 12.0, 4.0)
    assert isinstance(first.rating, float)
    assert second == Event("x", "u", "i", "view", 1.0) and second.rating is None


# --- reading -----------------------------------------------------------------------------------


def test_read_events_yields_all_segments_in_numeric_order(tmp_path):
    events = [ev(i) for i in range(30)]
    write_segment(tmp_path, 2, events[10:20])
    write_segment(tmp_path, 1, events[:10])
    write_segment(tmp_path, 10, events[20:])  # numeric, not lexicographic, order
    (tmp_path / "events-000003.log.corrupt-123").write_bytes(b"junk")  # ignored
    (tmp_path / "LOCK").write_bytes(b"")
    assert [p.name for p in list_segments(tmp_path)] == [
        "events-000001.log",
        "events-000002.log",
        "events-000010.log",
    ]
    assert list(read_events(tmp_path)) == events


def test_read_events_skips_damage_without_modifying_files(tmp_path, caplog):
    a = write_segment(tmp_path, 1, [ev(0), ev(1)], tail=b"\x05\x00")
    b = write_segment(tmp_path, 2, [ev(2)], tail=b"\xff" * 20)
    before = a.read_bytes(), b.read_bytes()
    with caplog.at_level(logging.WARNING):
        assert [e.event_id for e in read_events(tmp_path)] == ["e0", "e1", "e2"]
    assert (a.read_bytes(), b.read_bytes()) == before
    assert corrupt_files(tmp_path) == []
    assert "events-000001.log" in caplog.text  # damage in a non-last segment is reported


def test_read_events_of_empty_and_missing_directory(tmp_path):
    assert list(read_events(tmp_path)) == []
    with pytest.raises(FileNotFoundError):
        list(read_events(tmp_path / "nope"))


# --- recovery ----------------------------------------------------------------------------------

GOOD = [ev(i, event_type="rating", rating=float(i % 5)) for i in range(5)]


def _torn_mid_payload(records: bytes) -> tuple[bytes, int]:
    last = old_record(GOOD[-1])
    prefix = records[: -len(last)]
    return prefix + last[: len(last) // 2], len(prefix)


def _short_header(records: bytes) -> tuple[bytes, int]:
    return records + b"\x10\x00\x00", len(records)


def _garbage(records: bytes) -> tuple[bytes, int]:
    return records + b"\x00garbage\xff" * 7, len(records)


def _flipped_byte(records: bytes) -> tuple[bytes, int]:
    last = old_record(GOOD[-1])
    data = bytearray(records)
    data[-5] ^= 0x01  # inside the last record's payload -> CRC mismatch
    return bytes(data), len(records) - len(last)


def _bad_json_good_crc(records: bytes) -> tuple[bytes, int]:
    payload = b'{"event_id": "broken"'
    return records + HEADER.pack(len(payload), zlib.crc32(payload)) + payload, len(records)


def _zero_filled(records: bytes) -> tuple[bytes, int]:
    # What some filesystems leave after a crash: the size grew but the data never landed.
    # Length 0 + CRC 0 is a CRC-valid empty payload, which must still be rejected.
    return records + b"\x00" * 4096, len(records)


@pytest.mark.parametrize(
    "damage",
    [_torn_mid_payload, _short_header, _garbage, _flipped_byte, _bad_json_good_crc, _zero_filled],
)
def test_recover_keeps_valid_prefix_and_sets_aside_the_tail(tmp_path, damage):
    write_segment(tmp_path, 1, [ev(100), ev(101)])
    records = b"".join(old_record(e) for e in GOOD)
    data, keep = damage(records)
    last = tmp_path / "events-000002.log"
    last.write_bytes(data)

    report = recover(tmp_path)

    ends = itertools.accumulate(len(old_record(e)) for e in GOOD)
    expected = [e for e, end in zip(GOOD, ends, strict=True) if end <= keep]
    assert len(expected) in (4, 5)
    assert last.read_bytes() == data[:keep]
    assert report.records == 2 + len(expected)
    assert report.segments == 2
    assert report.corrupt_tails == 1
    assert report.bytes_set_aside == len(data) - keep
    [aside] = corrupt_files(tmp_path)
    assert report.paths == [aside]
    assert aside.name.startswith("events-000002.log.corrupt-")
    assert aside.read_bytes() == data[keep:]  # exactly the damaged bytes, nothing dropped
    assert list(read_events(tmp_path)) == [ev(100), ev(101), *expected]
    # Idempotent: a second recovery finds nothing.
    again = recover(tmp_path)
    assert (again.corrupt_tails, again.records) == (0, report.records)
    assert len(corrupt_files(tmp_path)) == 1


def test_recover_middle_of_non_last_segment(tmp_path):
    events = [ev(i) for i in range(6)]
    first = write_segment(tmp_path, 1, events[:4])
    write_segment(tmp_path, 2, events[4:])
    data = bytearray(first.read_bytes())
    r0 = len(old_record(events[0]))
    data[r0 + 12] ^= 0xFF  # second record's payload
    first.write_bytes(bytes(data))

    report = recover(tmp_path)

    assert report.records == 3 and report.corrupt_tails == 1
    assert report.bytes_set_aside == len(data) - r0
    assert "NOT the last segment" in report.details[0]
    assert first.read_bytes() == bytes(data[:r0])
    [aside] = report.paths
    assert aside.read_bytes() == bytes(data[r0:])
    assert list(read_events(tmp_path)) == [events[0], events[4], events[5]]


def test_recover_of_clean_empty_and_missing_log(tmp_path):
    write_segment(tmp_path, 1, [ev(0)])
    write_segment(tmp_path, 2, [])
    report = recover(tmp_path)
    assert (report.records, report.segments, report.corrupt_tails) == (1, 2, 0)
    assert report.paths == [] and report.bytes_set_aside == 0
    assert recover(tmp_path / "missing").segments == 0


def test_set_aside_names_do_not_collide(tmp_path):
    path = write_segment(tmp_path, 1, [ev(0)], tail=b"junk1")
    recover(tmp_path)
    with path.open("ab") as f:
        f.write(b"junk2")
    recover(tmp_path)
    assert sorted(p.read_bytes() for p in corrupt_files(tmp_path)) == [b"junk1", b"junk2"]

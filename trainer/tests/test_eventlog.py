import itertools
import logging
import math
import os
import struct
import zlib
from pathlib import Path

import polars as pl
import pytest

from recsys_core.data import EventWeights, from_frame
from recsys_core.eventlog import (
    HEADER,
    Event,
    LogLockedError,
    decode_payload,
    encode_payload,
    encode_record,
    events_to_interactions,
    list_segments,
    lock_directory,
    read_events,
    recover,
    segment_name,
)


def ev(i: int, **kw) -> Event:
    fields = dict(event_id=f"e{i}", user_id=f"u{i % 7}", item_id=f"i{i % 11}", event_type="click")
    fields.update(kw)
    fields.setdefault("timestamp", 1_700_000_000.0 + i)
    return Event(**fields)


def write_segment(directory: Path, index: int, events: list[Event], tail: bytes = b"") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / segment_name(index)
    path.write_bytes(b"".join(encode_record(e) for e in events) + tail)
    return path


def corrupt_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".corrupt-" in p.name)


# --- encoding ----------------------------------------------------------------------------------


def test_record_layout_is_length_crc_then_compact_json():
    e = Event("id-1", "ü", "item", "rating", 12, rating=4)
    record = encode_record(e)
    length, crc = struct.unpack("<II", record[:8])
    payload = record[8:]
    assert length == len(payload) and crc == zlib.crc32(payload)
    assert b" " not in payload and "ü".encode() in payload  # compact, UTF-8 (not \\u escapes)
    back = decode_payload(payload)
    assert back == e and back.timestamp == 12.0 and isinstance(back.rating, float)


def test_payload_round_trip_without_rating_and_with_extra_keys():
    e = ev(3)
    assert decode_payload(encode_payload(e)) == e
    assert e.rating is None
    # Unknown keys (a newer writer) are ignored; a missing rating means None.
    payload = (
        b'{"event_id":"x","user_id":"u","item_id":"i","event_type":"view","timestamp":1,"v":2}'
    )
    assert decode_payload(payload) == Event("x", "u", "i", "view", 1.0)


@pytest.mark.parametrize(
    "kw, error",
    [
        ({"event_id": ""}, ValueError),
        ({"user_id": 5}, TypeError),
        ({"timestamp": math.nan}, ValueError),
        ({"timestamp": True}, TypeError),
        ({"timestamp": "1"}, TypeError),
        ({"rating": math.inf}, ValueError),
    ],
)
def test_invalid_events_are_rejected(kw, error):
    with pytest.raises(error):
        ev(1, **kw)


def test_unencodable_string_is_a_value_error():
    with pytest.raises(ValueError, match="UTF-8"):
        encode_record(ev(1, item_id="\ud800"))


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
    last = encode_record(GOOD[-1])
    prefix = records[: -len(last)]
    return prefix + last[: len(last) // 2], len(prefix)


def _short_header(records: bytes) -> tuple[bytes, int]:
    return records + b"\x10\x00\x00", len(records)


def _garbage(records: bytes) -> tuple[bytes, int]:
    return records + b"\x00garbage\xff" * 7, len(records)


def _flipped_byte(records: bytes) -> tuple[bytes, int]:
    last = encode_record(GOOD[-1])
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
    records = b"".join(encode_record(e) for e in GOOD)
    data, keep = damage(records)
    last = tmp_path / segment_name(2)
    last.write_bytes(data)

    report = recover(tmp_path)

    ends = itertools.accumulate(len(encode_record(e)) for e in GOOD)
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
    r0 = len(encode_record(events[0]))
    data[r0 + 12] ^= 0xFF  # second record's payload
    first.write_bytes(bytes(data))

    seen = []
    report = recover(tmp_path, on_event=seen.append)

    assert seen == [events[0], events[4], events[5]]
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


def test_recover_refuses_while_a_writer_holds_the_lock(tmp_path):
    path = write_segment(tmp_path, 1, [ev(0)], tail=b"in-flight")
    fd = lock_directory(tmp_path)
    try:
        with pytest.raises(LogLockedError):
            recover(tmp_path)
        assert path.read_bytes().endswith(b"in-flight")
        assert [e.event_id for e in read_events(tmp_path)] == ["e0"]  # readers take no lock
    finally:
        os.close(fd)
    assert recover(tmp_path).corrupt_tails == 1


def test_set_aside_names_do_not_collide(tmp_path):
    path = write_segment(tmp_path, 1, [ev(0)], tail=b"junk1")
    recover(tmp_path)
    with path.open("ab") as f:
        f.write(b"junk2")
    recover(tmp_path)
    assert sorted(p.read_bytes() for p in corrupt_files(tmp_path)) == [b"junk1", b"junk2"]


# --- to the trainer's data ---------------------------------------------------------------------


def test_events_to_interactions_weights_and_schema():
    events = [
        Event("a", "u1", "i1", "view", 10.7),
        Event("b", "u1", "i2", " Purchase ", 11.0),
        Event("c", "u2", "i1", "rating", 12.0, rating=3.5),
    ]
    df = events_to_interactions(events, EventWeights())
    assert df.schema == pl.Schema(
        {
            "user": pl.String,
            "item": pl.String,
            "event": pl.String,
            "weight": pl.Float32,
            "timestamp": pl.Int64,
        }
    )
    assert df.rows() == [
        ("u1", "i1", "view", 1.0, 10),
        ("u1", "i2", "purchase", 8.0, 11),
        ("u2", "i1", "rating", 3.5, 12),
    ]
    # The frame goes straight into the trainer's loader.
    inter = from_frame(df)
    assert len(inter) == 3 and sorted(inter.weight.tolist()) == [1.0, 3.5, 8.0]
    assert events_to_interactions([]).height == 0


@pytest.mark.parametrize(
    "event, match",
    [
        (Event("x", "u", "i", "like", 1.0), "unknown event type 'like'"),
        (Event("x", "u", "i", "rating", 1.0), "without a rating"),
        (Event("x", "u", "i", "rating", 1.0, rating=-1), "negative rating"),
    ],
)
def test_events_to_interactions_errors_name_the_event(event, match):
    with pytest.raises(ValueError, match=match):
        events_to_interactions([event])


def test_events_to_interactions_reads_the_log(tmp_path):
    write_segment(tmp_path, 1, [ev(i) for i in range(4)])
    df = events_to_interactions(read_events(tmp_path), EventWeights({"click": 2.5}))
    assert df["weight"].to_list() == [2.5] * 4

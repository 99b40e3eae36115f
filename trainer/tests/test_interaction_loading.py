import datetime as dt
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_core.data import (
    ColumnMap,
    DataError,
    EventWeights,
    Interactions,
    detect_format,
    from_frame,
    load_interactions,
)

# The data set lives in shared/ beside the repository (never inside it); RECSYS_ML100K_DIR
# points elsewhere.
ML_100K_DIR = Path(
    os.environ.get(
        "RECSYS_ML100K_DIR", Path(__file__).resolve().parents[3] / "shared/datasets/ml-100k"
    )
)
ML_100K = ML_100K_DIR / "u.data"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def external(inter: Interactions) -> list[tuple]:
    """Rows as (user, item, weight, timestamp) with external ids, for easy comparison."""
    return list(
        zip(
            inter.user_ids[inter.user_idx].tolist(),
            inter.item_ids[inter.item_idx].tolist(),
            inter.weight.tolist(),
            inter.timestamp.tolist(),
            strict=True,
        )
    )


# --- good files -------------------------------------------------------------------------------


def test_ml_100k_u_data(tmp_path):
    path = write(
        tmp_path / "u.data", "196\t242\t3\t881250949\n10\t302\t5\t891717742\n2\t242\t1\t1\n"
    )
    inter = load_interactions(path)
    assert detect_format(path) == "ml-100k"
    # Integer ids sort numerically, so the id maps are stable across row orders.
    assert inter.user_ids.tolist() == ["2", "10", "196"]
    assert inter.item_ids.tolist() == ["242", "302"]
    assert external(inter) == [
        ("196", "242", 3.0, 881250949),
        ("10", "302", 5.0, 891717742),
        ("2", "242", 1.0, 1),
    ]
    assert inter.user_idx.dtype == np.int32 and inter.item_idx.dtype == np.int32
    assert inter.weight.dtype == np.float32 and inter.timestamp.dtype == np.int64
    assert inter.event is None


def test_ml_100k_detected_by_content_and_forced_by_override(tmp_path):
    path = write(tmp_path / "ratings.txt", "1\t2\t3\t4\n")
    assert detect_format(path) == "ml-100k"
    forced = write(tmp_path / "other.tsv", "1\t2\t3.5\t4\n")
    assert external(load_interactions(forced, format="ml-100k")) == [("1", "2", 3.5, 4)]


def test_movielens_ratings_csv(tmp_path):
    path = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n",
    )
    assert detect_format(path) == "ml-csv"
    inter = load_interactions(path)
    assert external(inter) == [("1", "31", 2.5, 1260759144), ("1", "1029", 3.0, 1260759179)]


def test_generic_tsv_and_csv_default_header(tmp_path):
    text = "user item weight timestamp\nalice x1 2 100\nbob x2 0.5 200\n"
    tsv = write(tmp_path / "log.tsv", text.replace(" ", "\t"))
    csv = write(tmp_path / "log.csv", text.replace(" ", ","))
    expected = [("alice", "x1", 2.0, 100), ("bob", "x2", 0.5, 200)]
    assert detect_format(tsv) == detect_format(csv) == "delimited"
    assert external(load_interactions(tsv)) == expected
    assert external(load_interactions(csv)) == expected


@pytest.mark.parametrize("sep", ["\t", ",", ";", "|"])
def test_delimiter_sniffed_without_telling_extension(tmp_path, sep):
    path = write(tmp_path / "log.txt", sep.join(["user", "item", "timestamp"]) + "\n")
    path.write_text(path.read_text() + sep.join(["a", "b", "7"]) + "\n")
    assert external(load_interactions(path)) == [("a", "b", 1.0, 7)]


def test_csv_extension_with_tab_content_is_sniffed(tmp_path):
    path = write(tmp_path / "log.csv", "user\titem\ttimestamp\na\tb\t7\n")
    assert external(load_interactions(path)) == [("a", "b", 1.0, 7)]


def test_missing_weight_column_means_weight_one_and_values_are_stripped(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\n a , b ,5\n")
    assert external(load_interactions(path)) == [("a", "b", 1.0, 5)]


def test_column_map_renames(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,rating,ts,extra\nu,i,4,9,zzz\n")
    cols = ColumnMap(user="user_id", item="item_id", weight="rating", timestamp="ts")
    assert external(load_interactions(path, columns=cols)) == [("u", "i", 4.0, 9)]


def test_column_map_without_timestamp(tmp_path):
    path = write(tmp_path / "log.csv", "user,item\nu,i\n")
    inter = load_interactions(path, columns=ColumnMap(timestamp=None))
    assert external(inter) == [("u", "i", 1.0, 0)]


def test_ids_are_always_strings_and_leading_zeros_kept(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\n007,1.0,1\n7,01,2\n")
    inter = load_interactions(path)
    assert inter.user_ids.dtype.kind == "U"
    assert sorted(inter.user_ids.tolist()) == ["007", "7"]
    assert sorted(inter.item_ids.tolist()) == ["01", "1.0"]


def test_event_column_maps_to_default_weights(tmp_path):
    path = write(
        tmp_path / "log.tsv",
        "user\titem\tevent\tweight\ttimestamp\n"
        "u\ta\tview\t\t1\n"
        "u\ta\tclick\t\t2\n"
        "u\tb\tAdd_To_Cart\t\t3\n"
        "u\tb\t purchase \t\t4\n"
        "v\tc\trating\t4.5\t5\n",
    )
    inter = load_interactions(path)
    assert inter.weight.tolist() == [1.0, 2.0, 4.0, 8.0, 4.5]
    assert inter.event.tolist() == ["view", "click", "add_to_cart", "purchase", "rating"]


def test_event_weights_are_configurable(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,event,timestamp\nu,a,like,1\nu,b,view,2\n")
    weights = EventWeights({"like": 3.0, "view": 0.5})
    assert load_interactions(path, event_weights=weights).weight.tolist() == [3.0, 0.5]


def test_event_weights_reject_bad_values():
    with pytest.raises(ValueError, match="like"):
        EventWeights({"like": -1.0})


def test_iso_timestamps(tmp_path):
    path = write(
        tmp_path / "log.csv",
        "user,item,timestamp\n"
        "u,a,2024-01-01T00:00:00Z\n"
        "u,b,2024-01-01T02:00:00+02:00\n"
        "u,c,2024-01-01 00:00:10\n"
        "u,d,2024-01-02\n"
        "u,e,2024-01-01T00:00:01.750\n"
        "u,f,1704067200\n",
    )
    day = 1_704_067_200  # 2024-01-01T00:00:00Z
    assert load_interactions(path).timestamp.tolist() == [
        day,
        day,
        day + 10,
        day + 86_400,
        day + 1,
        day,
    ]


def test_parquet_typed_columns(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {
            "user": [10, 2],
            "item": ["a", "b"],
            "weight": [1.5, 2.0],
            "timestamp": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 0, 5)],
        }
    ).write_parquet(path)
    inter = load_interactions(path)
    assert detect_format(path) == "parquet"
    assert external(inter) == [("10", "a", 1.5, 1_704_067_200), ("2", "b", 2.0, 1_704_067_205)]
    assert inter.user_ids.tolist() == ["2", "10"]


def test_parquet_string_columns_with_events(tmp_path):
    path = tmp_path / "events.pq"
    pl.DataFrame(
        {"user": ["u"], "item": ["a"], "event": ["purchase"], "timestamp": ["2024-01-01"]}
    ).write_parquet(path)
    inter = load_interactions(path)
    assert external(inter) == [("u", "a", 8.0, 1_704_067_200)]


def test_parquet_detected_by_magic_bytes(tmp_path):
    path = tmp_path / "log.bin"
    pl.DataFrame({"user": ["u"], "item": ["a"], "timestamp": [3]}).write_parquet(path)
    assert detect_format(path) == "parquet"
    assert external(load_interactions(path)) == [("u", "a", 1.0, 3)]


def test_bom_crlf_quotes_and_unicode(tmp_path):
    path = tmp_path / "log.csv"
    text = '\ufeffuser,item,timestamp\r\n"Smith, J",café,2024-01-01T00:00:00Z\r\nü,x,5\r\n'
    path.write_bytes(text.encode("utf-8"))
    assert external(load_interactions(path)) == [
        ("Smith, J", "café", 1.0, 1_704_067_200),
        ("ü", "x", 1.0, 5),
    ]


def test_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,1\n\nu,b,2\n\n\n")
    assert len(load_interactions(path)) == 2


def test_to_csr_sums_duplicates(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,weight,timestamp\nu,a,1,1\nu,a,2,2\nv,b,4,3\n")
    inter = load_interactions(path)
    m = inter.to_csr()
    assert m.shape == (2, 2) and m.dtype == np.float32 and m.nnz == 2
    u, a = inter.user_index["u"], inter.item_index["a"]
    assert m[u, a] == 3.0
    assert m[inter.user_index["v"], inter.item_index["b"]] == 4.0


def test_from_frame_round_trip():
    df = pl.DataFrame(
        {
            "user": ["b", "a", "b"],
            "item": ["x", "y", "y"],
            "event": ["view", "click", "purchase"],
            "weight": [1.0, 2.0, 8.0],
            "timestamp": [3, 1, 2],
        }
    )
    inter = from_frame(df)
    assert inter.to_frame().equals(df.with_columns(pl.col("weight").cast(pl.Float32)))
    again = from_frame(inter.to_frame())
    assert external(again) == external(inter)


def test_take_keeps_id_maps():
    inter = from_frame(pl.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "timestamp": [1, 2]}))
    part = inter.take(np.array([False, True]))
    assert part.user_ids is inter.user_ids and part.item_ids is inter.item_ids
    assert external(part) == [("b", "y", 1.0, 2)]


def test_real_movielens_100k():
    if not ML_100K.exists():
        pytest.skip(f"MovieLens 100k not found at {ML_100K} (shared data set; never copied here)")
    inter = load_interactions(ML_100K)
    assert len(inter) == 100_000
    assert inter.n_users == 943 and inter.n_items == 1682
    assert inter.user_ids[0] == "1" and inter.item_ids[-1] == "1682"
    assert set(np.unique(inter.weight).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter.to_csr().nnz == 100_000  # one rating per (user, item)


# --- bad files --------------------------------------------------------------------------------


def assert_error(excinfo, path: Path, row: int, column: str, *words: str) -> None:
    message = str(excinfo.value)
    assert path.name in message
    assert f"row {row}" in message
    assert f"'{column}'" in message
    for w in words:
        assert w in message
    assert excinfo.value.row == row and excinfo.value.column == column


def test_error_missing_column(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,weight\nu,a,1\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 1, "timestamp", "missing column")


def test_error_missing_renamed_column(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,1\n")
    with pytest.raises(DataError) as e:
        load_interactions(path, columns=ColumnMap(user="user_id"))
    assert_error(e, path, 1, "user_id", "missing column")


def test_error_unparsable_timestamp(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,1\nu,b,2\nu,c,abc\nu,d,xyz\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 4, "timestamp", "'abc'")


def test_error_unparsable_timestamp_in_headerless_u_data(tmp_path):
    path = write(tmp_path / "u.data", "1\t2\t3\t4\n1\t3\t3\tabc\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 2, "timestamp", "'abc'")


def test_error_unparsable_weight(tmp_path):
    path = write(tmp_path / "log.tsv", "user\titem\tweight\ttimestamp\nu\ta\tlots\t1\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 2, "weight", "'lots'")


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "NaN", "inf", "-inf", "1e39"])
def test_error_negative_or_non_finite_weight(tmp_path, value):
    path = write(tmp_path / "log.csv", f"user,item,weight,timestamp\nu,a,1,1\nu,b,{value},2\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "weight", value)


def test_error_rating_weight_in_ml_csv(tmp_path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,-3,4\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 2, "rating", "negative")


def test_error_empty_file(tmp_path):
    path = write(tmp_path / "log.csv", "")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 1, "user", "empty file")


def test_error_header_only(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 2, "user", "no rows")


def test_error_empty_user_id(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,1\n  ,b,2\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "user", "empty user id")


def test_error_empty_item_id(tmp_path):
    path = write(tmp_path / "log.tsv", "user\titem\ttimestamp\nu\t\t1\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 2, "item", "empty item id")


def test_error_missing_value_in_short_row(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,1\nu,b\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "timestamp", "missing")


def test_error_too_many_fields(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,1\nu,b,2,surprise\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert path.name in str(e.value) and "row 3" in str(e.value)


def test_error_unknown_event(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,event,timestamp\nu,a,view,1\nu,a,wishlist,2\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "event", "unknown event type 'wishlist'", "purchase")


def test_error_rating_event_without_weight_column(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,event,timestamp\nu,a,view,1\nu,a,rating,2\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "weight", "rating")


def test_error_bad_weight_ignored_where_event_defines_it(tmp_path):
    # The weight column only matters for rating events.
    path = write(
        tmp_path / "log.csv", "user,item,event,weight,timestamp\nu,a,view,oops,1\nu,b,rating,x,2\n"
    )
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "weight", "'x'")


def test_error_row_counts_blank_lines(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu,a,1\n\n\nu,b,bad\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 5, "timestamp", "'bad'")


def test_error_reports_the_first_offending_row_across_columns(tmp_path):
    path = write(
        tmp_path / "log.csv", "user,item,weight,timestamp\nu,a,1,1\nu,b,1,late\nu,c,-1,3\n,d,1,4\n"
    )
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "timestamp", "'late'")


def test_error_parquet_rows_are_record_numbers(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {"user": ["u", "u", "u"], "item": ["a", "b", "c"], "weight": [1.0, 2.0, math.nan]}
    ).with_columns(timestamp=pl.lit(1)).write_parquet(path)
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "weight", "nan")


def test_error_found_in_a_large_file(tmp_path):
    n = 200_000
    lines = [f"u{i % 1000},i{i % 777},1,{i}" for i in range(n)]
    lines[n - 3] = "u1,i1,1,2024-13-45"  # invalid month/day
    path = write(tmp_path / "big.csv", "user,item,weight,timestamp\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, n - 3 + 2, "timestamp", "2024-13-45")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_interactions(tmp_path / "nope.csv")


# --- MovieLens 1M, headerless files with column positions, the Steam play log ---------------

STEAM = (
    Path(
        os.environ.get(
            "RECSYS_STEAM_DIR",
            Path(__file__).resolve().parents[3] / "shared/datasets/steam-200k-play",
        )
    )
    / "steam-200k-play.csv"
)

STEAM_HEADER = "user-id,game-title,value,\n"


def test_ml_1m_ratings_dat(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n10::661::3::978302109\n")
    assert detect_format(path) == "ml-1m"
    assert external(load_interactions(path)) == [
        ("1", "1193", 5.0, 978300760),
        ("10", "661", 3.0, 978302109),
    ]


def test_ml_10m_half_star_ratings_with_crlf(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_bytes(b"1::122::4.5::838985046\r\n2::185::0.5::838983525\r\n")
    assert detect_format(path) == "ml-1m"
    assert external(load_interactions(path)) == [
        ("1", "122", 4.5, 838985046),
        ("2", "185", 0.5, 838983525),
    ]


def test_headerless_tsv_with_positions(tmp_path):
    path = write(tmp_path / "log.tsv", "alice\tx1\t2\t100\nbob\tx2\t0.5\t200\n")
    cols = ColumnMap(user=1, item=2, weight=3, timestamp=4)
    assert external(load_interactions(path, columns=cols)) == [
        ("alice", "x1", 2.0, 100),
        ("bob", "x2", 0.5, 200),
    ]


def test_positions_in_any_order_and_unused_columns(tmp_path):
    # item, extra, user: the first line is data, not a header.
    path = write(tmp_path / "log.csv", 'x1,"note, with comma",alice\nx2,,bob\n')
    inter = load_interactions(path, columns=ColumnMap(user=3, item=1))
    # Columns not given by position are absent: weight 1, no time.
    assert external(inter) == [("alice", "x1", 1.0, 0), ("bob", "x2", 1.0, 0)]


def test_positions_on_a_ml_1m_file(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n")
    cols = ColumnMap(user=2, item=1, timestamp=4)
    assert external(load_interactions(path, columns=cols)) == [("1193", "1", 1.0, 978300760)]


def test_steam_play_log(tmp_path):
    path = write(
        tmp_path / "steam.csv",
        STEAM_HEADER
        + "151603712,The Elder Scrolls V Skyrim,273,1\n"
        + '53875128,"Sir, You Are Being Hunted",0.5,\n'
        + "151603712,Duke Nukem Forever ,14.25,\n",
    )
    assert detect_format(path) == "steam"
    inter = load_interactions(path)
    assert external(inter) == [
        ("151603712", "The Elder Scrolls V Skyrim", 273.0, 0),
        ("53875128", "Sir, You Are Being Hunted", 0.5, 0),
        ("151603712", "Duke Nukem Forever", 14.25, 0),  # ids are stripped
    ]
    assert inter.event is None


def test_header_with_trailing_separator_names_the_last_column_by_position(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp,\nu,a,1,3\nu,b,2,\n")
    assert external(load_interactions(path)) == [("u", "a", 1.0, 1), ("u", "b", 1.0, 2)]
    with pytest.raises(DataError) as e:  # the unnamed column can still be used by its name
        load_interactions(path, columns=ColumnMap(weight="4"))
    assert_error(e, path, 3, "4", "missing weight")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"user": 1, "item": 2, "weight": "rating"}, "'rating' is a name"),
        ({"user": 1}, "item column: give its position"),
        ({"user": 0, "item": 1}, "count from 1"),
        ({"user": 1, "item": 2, "weight": 1.5}, "a name or a position"),
        ({"user": True, "item": 2}, "a name or a position"),
    ],
)
def test_column_map_rejects_bad_positions(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ColumnMap(**kwargs)


def test_real_steam_play_log():
    if not STEAM.exists():
        pytest.skip(f"Steam play log not found at {STEAM} (shared data set; never copied here)")
    inter = load_interactions(STEAM)
    assert len(inter) == 70_489 and inter.n_users == 9_418
    # 3,600 titles as written; two differ from another only by a trailing space.
    assert inter.n_items == 3_598
    assert "Sir, You Are Being Hunted" in inter.item_index
    assert inter.weight.min() == pytest.approx(0.1) and (inter.timestamp == 0).all()


# --- bad files in these formats ---------------------------------------------------------------


def test_error_ml_1m_bad_rating(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::2::3::4\n1::3::x::5\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 2, "rating", "'x'")


def test_error_ml_1m_extra_field(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::2::3::4\n1::3::3::5::6\n")
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert "ratings.dat" in str(e.value) and "row 2" in str(e.value)


def test_error_steam_non_numeric_hours(tmp_path):
    path = write(
        tmp_path / "steam.csv",
        STEAM_HEADER + '1,"Papers, Please",5.2,\n2,Dota 2,lots,1\n3,Spore,1,\n',
    )
    with pytest.raises(DataError) as e:
        load_interactions(path)
    assert_error(e, path, 3, "value", "'lots'")


def test_error_positional_weight_names_the_position(tmp_path):
    path = write(tmp_path / "log.tsv", "alice\tx1\t2\t100\nbob\tx2\tmany\t200\n")
    with pytest.raises(DataError) as e:
        load_interactions(path, columns=ColumnMap(user=1, item=2, weight=3, timestamp=4))
    assert_error(e, path, 2, "3", "'many'")


def test_error_position_beyond_the_last_column(tmp_path):
    path = write(tmp_path / "log.tsv", "alice\tx1\t2\t100\n")
    with pytest.raises(DataError) as e:
        load_interactions(path, columns=ColumnMap(user=1, item=2, weight=7))
    assert_error(e, path, 1, "7", "has 4 columns")

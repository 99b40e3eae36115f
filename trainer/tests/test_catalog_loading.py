import os
from pathlib import Path

import numpy as np
import pytest

from recsys_core.catalog import ML_GENRES, Catalog, load_catalog
from recsys_core.data import DataError

# shared/ beside the repository, or RECSYS_ML100K_DIR.
ML_ITEM = (
    Path(
        os.environ.get(
            "RECSYS_ML100K_DIR", Path(__file__).resolve().parents[3] / "shared/datasets/ml-100k"
        )
    )
    / "u.item"
)


def ml_line(item: int, title: str, flags: list[int]) -> str:
    return "|".join([str(item), title, "01-Jan-1995", "", "http://x", *map(str, flags)])


def write_u_item(folder: Path, lines: list[str]) -> Path:
    path = folder / "u.item"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


def flags(*on: int) -> list[int]:
    return [1 if g in on else 0 for g in range(19)]


def test_ml_u_item_latin1_and_fixed_genres(tmp_path):
    path = write_u_item(
        tmp_path,
        [ml_line(1, "Toy Story (1995)", flags(3, 4, 5)), ml_line(2, "Misérables, Les", flags())],
    )
    cat = load_catalog(path)
    assert cat.item_ids.tolist() == ["1", "2"]
    assert cat.title("2") == "Misérables, Les"
    assert cat.categories_of("1") == ("Animation", "Children's", "Comedy")
    assert cat.categories_of("2") == ()
    assert cat.category_names == ML_GENRES


def test_ml_u_item_uses_u_genre_next_to_it(tmp_path):
    names = [f"G{i}" for i in range(19)]
    (tmp_path / "u.genre").write_text("".join(f"{n}|{i}\n" for i, n in enumerate(names)) + "\n")
    path = write_u_item(tmp_path, [ml_line(7, "Film", flags(0, 18))])
    cat = load_catalog(path)
    assert cat.categories_of("7") == ("G0", "G18")
    assert cat.category_names == tuple(names)


def test_ml_u_item_bad_flag(tmp_path):
    bad = flags()
    bad[5] = 2
    path = write_u_item(tmp_path, [ml_line(1, "A", flags()), ml_line(2, "B", bad)])
    with pytest.raises(DataError) as e:
        load_catalog(path)
    assert "u.item" in str(e.value) and "row 2" in str(e.value) and "genre_5" in str(e.value)


@pytest.mark.parametrize(("name", "sep"), [("catalog.tsv", "\t"), ("catalog.csv", ",")])
def test_generic_catalog(tmp_path, name, sep):
    rows = [["item", "title", "categories"], ["b", "Bee Book", "Kids|Nature"], ["a", "Ant", ""]]
    path = tmp_path / name
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    cat = load_catalog(path)
    assert cat.item_ids.tolist() == ["b", "a"]
    assert cat.title("b") == "Bee Book"
    assert cat.categories_of("b") == ("Kids", "Nature")
    assert cat.categories_of("a") == ()
    assert cat.category_names == ("Kids", "Nature")


def test_generic_catalog_without_categories_column(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("item,title\nx,Thing\n")
    assert load_catalog(path).categories_of("x") == ()


@pytest.mark.parametrize(
    ("text", "row", "column", "reason"),
    [
        ("item,categories\nx,A\n", 1, "title", "missing column"),
        ("item,title\nx,T\n,U\n", 3, "item", "empty item id"),
        ("item,title\nx,T\ny,U\nx,V\n", 4, "item", "duplicate item id 'x'"),
        ("item,title\n", 2, "item", "no rows"),
        ("", 1, "item", "empty file"),
    ],
)
def test_generic_catalog_errors(tmp_path, text, row, column, reason):
    path = tmp_path / "items.csv"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_catalog(path)
    msg = str(e.value)
    assert "items.csv" in msg and f"row {row}" in msg and f"'{column}'" in msg and reason in msg


def test_category_matrix_aligns_with_given_ids():
    cat = Catalog(
        np.array(["a", "b"]), np.array(["A", "B"]), (("x", "y"), ("y",)), category_names=("y", "x")
    )
    m = cat.category_matrix(["b", "zzz", "a"]).toarray()
    assert cat.category_names == ("y", "x")
    np.testing.assert_array_equal(m, [[1, 0], [0, 0], [1, 1]])


def test_real_movielens_u_item():
    if not ML_ITEM.exists():
        pytest.skip(f"MovieLens 100k not found at {ML_ITEM} (shared data set; never copied here)")
    cat = load_catalog(ML_ITEM)
    assert len(cat) == 1682
    assert cat.title("1") == "Toy Story (1995)"
    assert cat.categories_of("1") == ("Animation", "Children's", "Comedy")
    assert len(cat.category_names) == 19


# --- MovieLens movies.dat (1M/10M) and movies.csv (ml-latest) ---------------------------------


def test_ml_1m_movies_dat_latin1(tmp_path):
    lines = [
        "1::Toy Story (1995)::Animation|Children's|Comedy",
        "73::Misérables, Les (1995)::Drama|Musical",
        "260::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi",
        '1114::"Funeral, The" (1996)::Drama',
    ]
    path = tmp_path / "movies.dat"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    cat = load_catalog(path)
    assert cat.item_ids.tolist() == ["1", "73", "260", "1114"]
    assert cat.title("73") == "Misérables, Les (1995)"
    assert cat.title("260") == "Star Wars: Episode IV - A New Hope (1977)"
    assert cat.title("1114") == '"Funeral, The" (1996)'
    assert cat.categories_of("1") == ("Animation", "Children's", "Comedy")
    assert cat.category_names[:4] == ("Animation", "Children's", "Comedy", "Drama")


def test_ml_1m_movies_dat_in_utf8(tmp_path):
    path = tmp_path / "movies.dat"
    path.write_text("73::Misérables, Les (1995)::Drama\n", encoding="utf-8")
    assert load_catalog(path).title("73") == "Misérables, Les (1995)"


def test_movies_csv_quoted_titles_and_no_genres(tmp_path):
    path = tmp_path / "movies.csv"
    path.write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        '1444,"""Great Performances"" Cats (1998)",Musical\n'
        "114335,La cravate (1957),(no genres listed)\n"
    )
    cat = load_catalog(path)
    assert cat.item_ids.tolist() == ["1", "11", "1444", "114335"]
    assert cat.title("11") == "American President, The (1995)"
    assert cat.title("1444") == '"Great Performances" Cats (1998)'
    assert cat.categories_of("11") == ("Comedy", "Drama", "Romance")
    assert cat.categories_of("114335") == ()
    assert "(no genres listed)" not in cat.category_names


@pytest.mark.parametrize(
    ("name", "text", "row", "column", "reason"),
    [
        ("movies.dat", "1::A::Drama\n2::B::Drama\n1::C::Drama\n", 3, "item", "duplicate"),
        ("movies.dat", "1::A::Drama\n2::B::Drama::extra\n", 2, None, "more fields"),
        ("movies.csv", "movieId,title,genres\n1,A,Drama\n,B,Drama\n", 3, "movieId", "empty"),
    ],
)
def test_movielens_catalog_errors(tmp_path, name, text, row, column, reason):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_catalog(path)
    msg = str(e.value)
    assert name in msg and f"row {row}" in msg and reason in msg
    assert e.value.column == column

"""The content model: TF-IDF values by hand, persistence, cold items, the hybrid, the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_core import artifacts
from recsys_core.catalog import Catalog, with_catalog
from recsys_core.data import Interactions
from recsys_core.models import Hybrid, HybridConfig, ItemCF
from recsys_core.models.content import Content, ContentConfig
from recsys_core.models.registry import COMPONENTS, NAMES, SIMILAR
from recsys_trainer.cli import main

TITLES = ["Star Wars", "Star Trek", "Heat", "Star Wars II"]
CATS = [("Sci-Fi",), ("Sci-Fi", "Action"), ("Action",), ("Sci-Fi",)]
IDS = ["a", "b", "c", "d"]


def tiny(cold: bool = True) -> Interactions:
    """Users u0 (a), u1 (c), u2 (a, b); item d is in the catalogue only (when ``cold``)."""
    inter = Interactions(
        user_idx=[0, 1, 2, 2],
        item_idx=[0, 2, 0, 1],
        weight=[1.0, 1.0, 1.0, 2.0],
        timestamp=[0, 1, 2, 3],
        user_ids=["u0", "u1", "u2"],
        item_ids=IDS[:3],
    )
    n = 4 if cold else 3
    return with_catalog(inter, Catalog(IDS[:n], TITLES[:n], CATS[:n]))


def unit(v: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(x * x for x in v.values()))
    return {k: x / norm for k, x in v.items()}


def row_dict(m: Content, r) -> dict[str, float]:
    row = m.attributes_[r] if isinstance(r, int) else r
    return {str(m.tokens_[j]): float(x) for j, x in zip(row.indices, row.data, strict=True)}


def test_tf_idf_values_match_a_hand_computed_reference():
    m = Content(ContentConfig(max_df=1.0)).fit(tiny(cold=False))
    i2, i1 = math.log(4 / 3) + 1, math.log(4 / 2) + 1  # smooth idf, n = 3, df 2 and 1
    want = [
        unit({"cat:sci-fi": i2, "title:star": i2, "title:wars": i1}),
        unit({"cat:sci-fi": i2, "cat:action": i2, "title:star": i2, "title:trek": i1}),
        unit({"cat:action": i2, "title:heat": i1}),
    ]
    for r, w in enumerate(want):
        got = row_dict(m, r)
        assert got.keys() == w.keys()
        for t in w:
            assert got[t] == pytest.approx(w[t], rel=1e-6)


def test_common_title_words_are_dropped_categories_kept_and_tf_is_sublinear():
    m = Content(ContentConfig(max_df=0.5)).fit(tiny(cold=False))  # "star": 2 of 3 > 0.5
    assert "title:star" not in m.tokens_.tolist()
    assert {"cat:sci-fi", "cat:action"} <= set(m.tokens_.tolist())
    cat = Catalog(["x", "y"], ["go go go", "stop"], [(), ()])
    inter = Interactions([0], [0], [1.0], [0], ["u"], ["x", "y"], catalog=cat)
    m = Content(ContentConfig(max_df=1.0)).fit(inter)
    assert row_dict(m, 0) == {"title:go": pytest.approx(1.0)}  # one token: unit length
    v = m.vectorize(["go stop"], [()])  # tf 1 each, idf ln(3/2)+1 both: equal weights
    assert row_dict(m, v) == pytest.approx({"title:go": 2**-0.5, "title:stop": 2**-0.5})


def test_attribute_columns_become_tokens():
    cat = Catalog(
        ["x", "y"],
        ["", ""],
        [(), ()],
        attributes=[{"tags": "cozy|Board Game"}, {"tags": "board game", "brand": "Acme"}],
    )
    inter = Interactions([0], [0], [1.0], [0], ["u"], ["x", "y"], catalog=cat)
    m = Content(ContentConfig(max_df=1.0)).fit(inter)
    assert set(m.tokens_.tolist()) == {"tags:cozy", "tags:board game", "brand:acme"}
    assert m.similar_items(0, 5).items.tolist() == [1]


def test_cold_catalogue_items_join_the_index_and_only_content_reaches_them():
    data = tiny()
    assert data.item_ids.tolist() == IDS and data.n_items == 4  # d appended
    m = Content(ContentConfig(max_df=1.0)).fit(data)
    h = data.to_csr()
    got = m.recommend(np.array([0]), h[[0]], 3).user(0)
    assert got.items[0] == 3  # "Star Wars II" for the user of "Star Wars"
    one = m.recommend_one(0, h[[0]], 3)
    assert one.items.tolist() == got.items.tolist()
    np.testing.assert_allclose(one.scores, got.scores, rtol=1e-6)
    np.testing.assert_allclose(m.score(np.array([0]), h[[0]])[0, one.items], one.scores, 1e-6)
    assert ItemCF().fit(data).score(np.array([0]), h[[0]])[0, 3] == 0
    assert m.similar_items(0, 3).items[0] == 3


def test_vectorize_and_score_vectors_match_the_indexed_items():
    data = tiny()
    m = Content(ContentConfig(max_df=1.0)).fit(data)
    v = m.vectorize(TITLES, CATS)
    np.testing.assert_allclose(v.toarray(), m.attributes_.toarray(), rtol=1e-6, atol=1e-7)
    h = data.to_csr()
    for u in range(data.n_users):
        np.testing.assert_allclose(
            m.score_vectors(h[[u]], v), m.score(np.array([u]), h[[u]])[0], rtol=1e-5, atol=1e-7
        )
    new = m.vectorize(["Heat Wave"], [("Action", "Unseen")], [{"mood": "tense"}])
    assert row_dict(m, new).keys() == {"cat:action", "title:heat"}  # unknown tokens ignored
    s = m.score_vectors(h[[1]], new)  # u1 chose "Heat"
    assert s.shape == (1,) and s[0] > 0
    with pytest.raises(ValueError, match="same length"):
        m.vectorize(["x"], [])


def test_explain_names_shared_tokens_and_the_history_items_holding_them():
    data = tiny()
    m = Content(ContentConfig(max_df=1.0)).fit(data)
    h = data.to_csr()
    (e,) = m.explain(2, h[[2]], np.array([3]))  # u2: a, b; d shares sci-fi, star, wars
    assert e.kind == "content"
    assert set(e.fields["tokens"]) == {"cat:sci-fi", "title:star", "title:wars"}
    assert "Sci-Fi" in e.fields["categories"]
    assert set(e.fields["items"]) == {0, 1}


def test_save_load_round_trip(tmp_path):
    data = tiny()
    m = Content(ContentConfig(max_df=1.0, title_weight=0.5)).fit(data)
    m.save(tmp_path)
    back = Content.load(tmp_path)
    assert back.config == m.config
    assert back.tokens_.tolist() == m.tokens_.tolist()
    assert (back.attributes_ != m.attributes_).nnz == 0
    h = data.to_csr()
    for u in range(3):
        a, b = m.recommend_one(u, h[[u]], 4), back.recommend_one(u, h[[u]], 4)
        assert a.items.tolist() == b.items.tolist()
    v1, v2 = m.vectorize(["Star Wars"], [("Sci-Fi",)]), back.vectorize(["Star Wars"], [("Sci-Fi",)])
    assert (v1 != v2).nnz == 0


def test_registered_as_similar_items_model_and_hybrid_component():
    assert "content" in NAMES and "content" in COMPONENTS and "content" in SIMILAR


def test_hybrid_has_a_content_component_only_with_a_catalogue():
    cfg = HybridConfig(tune=False)
    with_cat = Hybrid(cfg).fit(tiny())
    assert "content" in with_cat.components
    h = tiny().to_csr()
    assert with_cat.score(np.array([0]), h[[0]])[0, 3] > 0  # the cold item, through content
    plain = Hybrid(cfg).fit(sp_free(tiny()))
    assert "content" not in plain.components
    with pytest.raises(ValueError, match="catalogue"):
        Content().fit(sp_free(tiny()))


def sp_free(data: Interactions) -> Interactions:
    import dataclasses

    return dataclasses.replace(data, catalog=None)


def test_trainer_without_a_catalogue_leaves_content_out(tmp_path, capsys):
    data = tmp_path / "data" / "interactions.tsv"
    args = ["generate", "--out", str(data), "--users", "150", "--items", "60"]
    assert main([*args, "--interactions", "2500", "--seed", "4"]) == 0
    data.with_name("catalog.tsv").unlink()
    out = tmp_path / "art"
    train = ["train", "--interactions", str(data), "--out", str(out), "--no-evaluate"]
    assert main([*train, "--set", "tuning.enabled=false"]) == 0
    assert "content left out" in capsys.readouterr().err
    loaded = artifacts.load_version(out / artifacts.latest_version(out))
    assert set(loaded.models) == set(NAMES) - {"content"}
    assert "content" not in loaded.models["hybrid"].components
    assert main([*train, "--models", "content"]) == 2  # asked for by name: a clear error
    assert "needs an item catalogue" in capsys.readouterr().err


def test_extra_catalogue_columns_are_read_as_attributes(tmp_path):
    from recsys_core.catalog import load_catalog

    path = tmp_path / "catalog.tsv"
    path.write_text("item\ttitle\tcategories\ttags\nx\tA\tToys\tcozy|wood\ny\tB\tToys\t\n")
    cat = load_catalog(path)
    assert cat.attributes == ({"tags": "cozy|wood"}, {})
    assert cat.categories == (("Toys",), ("Toys",))

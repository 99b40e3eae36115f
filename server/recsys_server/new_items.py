"""Items added through UpsertItems after the version was trained: recommendable at once
through the version's ``content`` model (their titles, categories and attributes vectorised
with its vocabulary, `Catalogue.new_items`), until a refresh trains on them.

The rule (docs/serving.md, "New items"):

- ``content`` answering: new items compete with the indexed ones on its own score.
- the hybrid answering: a new item qualifies when the content model would put it in its own
  top k over the whole catalogue for this user (its score at least the k-th indexed item's);
  the best ``NEW_ITEM_SLOTS`` qualified items take the list from position ``NEW_ITEM_RANK``
  on, pushing the hybrid's last items out (the hybrid's scores for the others are on a scale
  the content score does not share, so a score merge would be arbitrary).
- any other model: none (they learn from interactions, which a new item does not have).

Each carries a content explanation with ``new_item`` set and "(new to you: just added)".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import scipy.sparse as sp

from recsys_core.models import Hybrid
from recsys_server.catalogue import Catalogue
from recsys_server.explain import MAX_TEXT, NEW_SUFFIX, Reason, describe, fit
from recsys_server.snapshot import Snapshot

NEW_ITEM_SLOTS = 2
"""At most this many just-added items in a hybrid list."""
NEW_ITEM_RANK = 3
"""The first of them goes at this position (1-based), the next after it."""


@dataclass(slots=True)
class NewItem:
    item_id: str
    score: float
    title: str
    categories: tuple[str, ...]
    vector: sp.csr_matrix


def content_of(snap: Snapshot):
    m = snap.models.get("content")
    return m if m is not None and hasattr(m, "vectorize") else None


def scored(
    catalogue: Catalogue | None, snap: Snapshot, row, exclude: Sequence[str]
) -> list[NewItem]:
    """The available new items the user's history gives a positive content score, best
    first (ties by id); empty without a content model or new items."""
    content = content_of(snap)
    if catalogue is None or content is None or not catalogue.records:
        return []
    records, vectors = catalogue.new_items(snap)
    if not records or vectors is None or row.nnz == 0:
        return []
    scores = content.score_vectors(row, vectors).tolist()
    skip = set(exclude)
    order = sorted(
        (j for j, s in enumerate(scores) if s > 0 and records[j].item_id not in skip),
        key=lambda j: (-scores[j], records[j].item_id),
    )
    return [
        NewItem(r.item_id, scores[j], r.title or r.item_id, tuple(r.categories), vectors[j])
        for j in order
        for r in (records[j],)
    ]


def for_list(model, snap: Snapshot, user: int, row, k: int, new: list[NewItem], deny):
    """The new items a list from ``model`` takes, and whether they merge by score (content)
    or by slot (hybrid): (items, by_score)."""
    content = content_of(snap)
    if not new or content is None:
        return [], False
    if model is content:
        return new[:k], True
    if not isinstance(model, Hybrid):
        return [], False
    own = content.recommend_one(user, row, k, None, deny)
    bar = float(own.scores[-1]) if len(own.scores) >= k else 0.0
    return [n for n in new if n.score >= bar][:NEW_ITEM_SLOTS], False


def place(items: list, extra: list, k: int, by_score: bool) -> list:
    """``extra`` merged into ``items`` (both answer entries with a ``score``); k at most."""
    if not extra:
        return items
    if by_score:
        return sorted(items + extra, key=lambda x: -x.score)[:k]
    at = min(NEW_ITEM_RANK - 1, len(items))
    kept = items[: max(k - len(extra), 0)]
    return (kept[:at] + extra + kept[at:])[:k]


def reasons(snap: Snapshot, row, kinds: Mapping[int, str], new: list[NewItem]) -> list[Reason]:
    """A content explanation per new item, said as new."""
    content = content_of(snap)
    rows = sp.vstack([n.vector for n in new]).tocsr()
    out = []
    for e in content.explain_rows(row, rows):
        r = describe(e, snap, kinds)
        r.new_item = True
        r.text = fit(r.text[: MAX_TEXT - len(NEW_SUFFIX)] + NEW_SUFFIX)
        out.append(r)
    return out


class ByVector:
    """A new item's neighbours by content, shaped like a model for `scoring.similar_allowed`."""

    def __init__(self, content, vector: sp.csr_matrix):
        self.content, self.vector = content, vector

    def similar_items(self, _item: int, k: int):
        return self.content.similar_to(self.vector, k)


def vector_of(catalogue: Catalogue | None, snap: Snapshot, item_id: str):
    """A new item's content row, None when it is not a new item or there is no content."""
    if catalogue is None or content_of(snap) is None:
        return None
    records, vectors = catalogue.new_items(snap)
    for j, r in enumerate(records):
        if r.item_id == item_id and vectors is not None:
            return vectors[j]
    return None


__all__ = ["NEW_ITEM_RANK", "NEW_ITEM_SLOTS", "ByVector", "NewItem", "for_list", "place", "scored"]

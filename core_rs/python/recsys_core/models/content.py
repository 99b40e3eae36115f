"""Content-based model: items described by their catalogue entry, users by what they chose.

Each item is a TF-IDF row over tokens of its catalogue entry:

* ``cat:<category>`` for each category (whole, lower-cased);
* ``title:<word>`` for each lower-cased word of the title;
* ``<column>:<tag>`` for each ``|``-separated value of a further catalogue column (tags,
  brand, ...), whole when it has at most ``TAG_WORDS`` words, else ``<column>:<word>`` per
  word (a description).

Word tokens (title words, description words) found in more than ``max_df`` of the items are
dropped ("the", a year); whole tokens are kept. The value of token t in item i is
``(1 + ln tf) * idf(t) * g(t)`` with ``idf(t) = ln((1 + n) / (1 + df(t))) + 1`` (n: items with a
catalogue entry, df: those holding t) and ``g`` = ``title_weight`` for title words, else 1; each
row is then scaled to unit length. A user's profile is the weighted sum of their history
items' rows; an item's score is profile . row, computed by a ``recsys_core.SparseScorer`` over
the token x item matrix. Items need no interaction to be scored, so a catalogue item nobody has
touched yet is reachable (``recsys_core.catalog.with_catalog`` puts it in the item index), and
``vectorize`` / ``score_vectors`` score items added after training.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.data import Interactions
from recsys_core.models.base import (
    Axes,
    Explanation,
    Recommender,
    check_transform,
    csr_arrays,
    csr_from,
    transform_axis,
)

WORD = re.compile(r"\w+")
TAG_WORDS = 3
"""An attribute value (or ``|``-separated part) with more words than this is read as text."""


@dataclass(frozen=True)
class ContentConfig:
    max_df: float = 0.1
    """Word tokens held by more than this fraction of the items are dropped."""
    title_weight: float = 1.0
    """Weight of title words against categories and attributes (0: titles ignored)."""
    explain_top: int = 3
    """Shared tokens (and history items holding them) kept per explanation."""
    transform: str = "linear"
    """How interaction weights are read: linear | binary | log (log(1 + w / transform_eps))."""
    transform_eps: float = 1.0

    def __post_init__(self) -> None:
        check_transform(self.transform, self.transform_eps)
        if not 0 < self.max_df <= 1:
            raise ValueError(f"max_df must be in (0, 1], got {self.max_df}")
        if not self.title_weight >= 0:
            raise ValueError(f"title_weight must be >= 0, got {self.title_weight}")


def item_tokens(
    title: str, categories: Sequence[str], attributes: Mapping[str, str] | None = None
) -> list[tuple[str, bool, str]]:
    """(token, is a word token, how a person reads it) for each occurrence in one catalogue
    entry."""
    out = [(f"cat:{c.strip().lower()}", False, c.strip()) for c in categories if c.strip()]
    out += [(f"title:{w}", True, w) for w in WORD.findall(title.lower())]
    for key, value in (attributes or {}).items():
        key = key.strip().lower()
        for part in str(value).split("|"):
            words = WORD.findall(part.lower())
            if len(words) > TAG_WORDS:
                out += [(f"{key}:{w}", True, w) for w in words]
            elif words:
                out.append((f"{key}:{' '.join(words)}", False, part.strip()))
    return out


def _normalise_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ m, dtype=np.float32)


class Content(Recommender):
    name = "content"

    def __init__(self, config: ContentConfig | None = None) -> None:
        self.config = config or ContentConfig()
        self.attributes_: sp.csr_matrix | None = None  # items x tokens, unit rows
        self.tokens_: np.ndarray | None = None  # str, the vocabulary in column order
        self.labels_: np.ndarray | None = None  # str, each token as a person reads it
        self.idf_: np.ndarray | None = None  # float32 per token, g(t) included
        self._scorer: rc.SparseScorer | None = None
        self._vocab: dict[str, int] = {}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return cls(ContentConfig(**params))

    @classmethod
    def search_space(cls, train: Interactions) -> Axes:
        return [
            transform_axis(train),
            [{"title_weight": w} for w in (0.0, 0.25, 0.5, 1.0)],
            [{"max_df": d} for d in (0.02, 0.05, 0.1, 0.3)],
        ]

    def unfit_reason(self, data: Interactions) -> str | None:
        if data.catalog is None:
            return (
                "content needs an item catalogue (--catalog, or catalog.tsv, movies.csv, "
                "movies.dat or u.item beside the interactions)"
            )
        index = data.catalog.index
        if not any(i in index for i in data.item_ids.tolist()):
            return "content: the catalogue describes none of the items"
        return None

    # -- fitting --------------------------------------------------------------------------

    def fit(self, train: Interactions) -> Self:
        reason = self.unfit_reason(train)
        if reason is not None:
            raise ValueError(reason)
        cat = train.catalog
        self.n_users, self.n_items = train.n_users, train.n_items
        docs: list[list[tuple[str, bool, str]] | None] = []
        for item in train.item_ids.tolist():
            pos = cat.index.get(item)
            if pos is None:
                docs.append(None)
                continue
            attrs = cat.attributes[pos] if cat.attributes is not None else None
            docs.append(item_tokens(str(cat.titles[pos]), cat.categories[pos], attrs))
        n = sum(d is not None for d in docs)
        df: Counter[str] = Counter()
        word: dict[str, bool] = {}
        label: dict[str, str] = {}
        for d in docs:
            for tok in {t for t, _, _ in d or ()}:
                df[tok] += 1
            for tok, is_word, text in d or ():
                word[tok] = is_word
                label.setdefault(tok, text)
        c = self.config
        keep = [t for t in df if not (word[t] and df[t] > c.max_df * n and df[t] > 1)]
        keep.sort()  # column order does not depend on the catalogue's order
        self.tokens_ = np.asarray(keep, dtype=np.str_)
        self.labels_ = np.asarray([label[t] for t in keep], dtype=np.str_)
        self._vocab = {t: j for j, t in enumerate(keep)}
        idf = np.array([np.log((1 + n) / (1 + df[t])) + 1 for t in keep], np.float64)
        gain = np.array([c.title_weight if t.startswith("title:") else 1.0 for t in keep])
        self.idf_ = (idf * gain).astype(np.float32)
        self.attributes_ = self._vectorize_docs([d or [] for d in docs])
        self._build()
        return self

    def _vectorize_docs(self, docs: list[list[tuple[str, bool, str]]]) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for r, d in enumerate(docs):
            counts = Counter(self._vocab[t] for t, _, _ in d if t in self._vocab)
            for j, tf in counts.items():
                rows.append(r)
                cols.append(j)
                vals.append((1.0 + np.log(tf)) * self.idf_[j])
        m = sp.csr_matrix(
            (np.asarray(vals, np.float32), (rows, cols)), shape=(len(docs), len(self._vocab))
        )
        m.sum_duplicates()
        m.eliminate_zeros()  # title words when title_weight is 0
        m = _normalise_rows(m)
        m.sort_indices()
        return m

    def _build(self) -> None:
        # tokens x items: a profile (a weighted set of tokens) is the scorer's "history".
        self._scorer = rc.SparseScorer(sp.csr_matrix(self.attributes_.T))
        self._vocab = {t: j for j, t in enumerate(self.tokens_.tolist())}

    # -- items not in the index (added after training) ------------------------------------

    def vectorize(
        self,
        titles: Sequence[str],
        categories: Sequence[Sequence[str]],
        attrs: Sequence[Mapping[str, str] | None] | None = None,
    ) -> sp.csr_matrix:
        """Rows (one per item, tokens as columns) for catalogue entries the model was not
        fitted on, with the fitted vocabulary and idf: tokens it never saw are ignored."""
        attrs = attrs if attrs is not None else [None] * len(titles)
        if not len(titles) == len(categories) == len(attrs):
            raise ValueError("titles, categories and attrs must have the same length")
        docs = [item_tokens(t, c, a) for t, c, a in zip(titles, categories, attrs, strict=True)]
        return self._vectorize_docs(docs)

    def profile(self, row: sp.csr_matrix) -> sp.csr_matrix:
        """The user's token profile (1 x tokens) from their raw history row."""
        p = sp.csr_matrix(self.weigh(row) @ self.attributes_, dtype=np.float32)
        p.sort_indices()
        return p

    def score_vectors(self, row: sp.csr_matrix, vectors: sp.csr_matrix) -> np.ndarray:
        """Scores of items given as ``vectorize`` rows for one user's raw history ``row``: on
        the scale of the model's scores for the indexed items."""
        return np.asarray((vectors @ self.profile(row).T).toarray()).ravel().astype(np.float32)

    # -- scoring ----------------------------------------------------------------------------

    def score(self, users, history: sp.csr_matrix) -> np.ndarray:
        profiles = sp.csr_matrix(self.weigh(history) @ self.attributes_, dtype=np.float32)
        return np.asarray((profiles @ self.attributes_.T).toarray(), dtype=np.float32)

    def recommend(self, users, history, k=10, *, exclude_seen=True, allow=None, deny=None):
        profiles = sp.csr_matrix(self.weigh(history) @ self.attributes_, dtype=np.float32)
        profiles.sort_indices()
        return self._scorer.recommend_batch(
            profiles,
            k,
            exclude=history if exclude_seen else None,
            allow=allow,
            deny=deny,
            exclude_history=False,
        )

    def recommend_one(self, user, row, k, allow=None, deny=None) -> rc.Recommendations:
        p = self.profile(row)
        return self._scorer.recommend(
            p.indices,
            p.data,
            k,
            exclude=row.indices,
            allow=allow,
            deny=deny,
            exclude_history=False,
        )

    def blend_part(self, user, row, weight):
        p = self.profile(row)
        return (self._scorer, p.indices, p.data, weight)

    def similar_items(self, item: int, k: int = 10) -> rc.Recommendations:
        return self.similar_to(self.attributes_[item], k, exclude=[item])

    def similar_to(self, row: sp.csr_matrix, k: int = 10, exclude=()) -> rc.Recommendations:
        """The indexed items most like a token ``row`` (an item's, or ``vectorize``'s for an
        item added after training)."""
        a = sp.csr_matrix(row, dtype=np.float32)
        a.sort_indices()
        r = self._scorer.recommend(
            a.indices, a.data, k, exclude=list(exclude), exclude_history=False
        )
        keep = r.scores > 0  # an item sharing no token is not similar
        return rc.Recommendations(r.items[keep], r.scores[keep])

    def explain(self, user, history: sp.csr_matrix, items) -> list[Explanation]:
        """Per item: the tokens it shares with the profile, largest contribution first (at
        most ``explain_top``; categories as ``categories``, the rest as ``tokens``), and the
        history items holding them, ranked by how much they put into those tokens."""
        return self.explain_rows(history, self.attributes_[np.asarray(items, dtype=np.int64)])

    def explain_rows(self, history: sp.csr_matrix, rows: sp.csr_matrix) -> list[Explanation]:
        """`explain` for items given as token rows (``vectorize``'s, for items added after
        training)."""
        rows = sp.csr_matrix(rows)
        h = self.weigh(history).tocsr()
        p = self.profile(history)
        prof = dict(zip(p.indices.tolist(), p.data.tolist(), strict=True))
        hist = self.attributes_[h.indices]  # history items x tokens
        out = []
        for j in range(rows.shape[0]):
            row = rows[j]
            shared = [
                (prof[t] * v, t)
                for t, v in zip(row.indices.tolist(), row.data.tolist(), strict=True)
                if prof.get(t, 0) > 0
            ]
            shared.sort(key=lambda x: (-x[0], x[1]))
            top = shared[: self.config.explain_top]
            toks = [t for _, t in top]
            names = [str(self.tokens_[t]) for t in toks]
            labels = [str(self.labels_[t]) for t in toks]
            by_item: dict[int, float] = {}
            if toks:
                part = hist[:, toks].multiply(h.data[:, None]).tocsr()
                sums = np.asarray(part.sum(axis=1)).ravel()
                for r in np.flatnonzero(sums > 0):
                    by_item[int(h.indices[r])] = float(sums[r])
            ranked = sorted(by_item.items(), key=lambda x: (-x[1], x[0]))[: self.config.explain_top]
            out.append(
                Explanation(
                    "content",
                    {
                        "tokens": names,
                        "contributions": [float(c) for c, _ in top],
                        "labels": labels,
                        "categories": [
                            lb for n, lb in zip(names, labels, strict=True) if n.startswith("cat:")
                        ],
                        "items": [i for i, _ in ranked],
                        "item_contributions": [c for _, c in ranked],
                    },
                )
            )
        return out

    # -- persistence --------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        return csr_arrays(self.attributes_, "attributes") | {
            "tokens": self.tokens_,
            "labels": self.labels_,
            "idf": self.idf_,
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.attributes_ = csr_from(arrays, "attributes")
        self.tokens_ = np.asarray(arrays["tokens"], dtype=np.str_)
        self.labels_ = np.asarray(arrays["labels"], dtype=np.str_)
        self.idf_ = np.asarray(arrays["idf"], dtype=np.float32)
        self._build()

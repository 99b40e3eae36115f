"""The transport-agnostic request path: validate a query, build the user's scoring history,
route, rank one user (``model.recommend_one``), explain, attach confidences."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys_core.models import Hybrid
from recsys_core.models.registry import SIMILAR
from recsys_server import diversify, new_items, router
from recsys_server.catalogue import Catalogue
from recsys_server.config import Experiment
from recsys_server.errors import InvalidArgument, NotFound
from recsys_server.experiments.interleave import team_draft
from recsys_server.explain import Reason, blend_reasons, describe, hybrid_reasons, popular_now
from recsys_server.explain_pb import serialized
from recsys_server.live import LiveHistory
from recsys_server.snapshot import Snapshot, relative

MAX_K = 1000
MAX_ID = 256
MAX_IDS = 1000
SIMILAR_MODELS = SIMILAR  # the registered models with ``similar_items``
SESSION = "session"  # event kind of request.recent_item_ids (explained as "viewed")


@dataclass(slots=True)
class Query:
    user_id: str
    k: int
    model: str = ""
    exclude_item_ids: Sequence[str] = ()
    allow_item_ids: Sequence[str] = ()
    recent_item_ids: Sequence[str] = ()
    explain: bool = False
    diversity: float = 0.0
    """0 … 1: MMR re-ranking strength (`recsys_server.diversify`); 0 is off."""


@dataclass(slots=True)
class Scored:
    item_id: str
    score: float
    confidence: float
    title: str
    categories: tuple[str, ...]
    reason: Reason | bytes | None = None
    """Why: a `Reason`, or an Explanation already serialised (`explained`)."""


@dataclass(slots=True)
class Answer:
    user_id: str
    items: list[Scored]
    model: str
    version: str
    tier: str
    experiment: str = ""
    variant: str = ""
    recommendation_id: str = ""
    """Set by the core when impressions are recorded (`recsys_server.impressions`)."""
    teams: list[int] = field(default_factory=list)
    """Interleave: per item, the variant that placed it (0 = first, 1 = second); else empty."""


@dataclass(slots=True)
class SimilarAnswer:
    item_id: str
    items: list[Scored]
    model: str
    version: str


# -- validation --------------------------------------------------------------------------------


def check_id(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(name, "must not be empty")
    if len(value) > MAX_ID:
        raise InvalidArgument(name, f"longer than {MAX_ID} characters ({len(value)})")


def check_k(k: int, name: str = "k") -> None:
    if not (1 <= k <= MAX_K):
        raise InvalidArgument(name, f"must be in 1..{MAX_K}, got {k}")


def check_ids(values: Sequence[str], name: str) -> None:
    if len(values) > MAX_IDS:
        raise InvalidArgument(name, f"at most {MAX_IDS} ids, got {len(values)}")
    for n, v in enumerate(values):
        if not v or len(v) > MAX_ID:
            check_id(v, f"{name}[{n}]")


def check_query(q: Query, prefix: str = "") -> None:
    check_id(q.user_id, prefix + "user_id")
    check_k(q.k, prefix + "k")
    check_ids(q.exclude_item_ids, prefix + "exclude_item_ids")
    check_ids(q.allow_item_ids, prefix + "allow_item_ids")
    check_ids(q.recent_item_ids, prefix + "recent_item_ids")
    check_diversity(q.diversity, prefix + "diversity")


def check_diversity(value: float, name: str = "diversity") -> None:
    if not (0.0 <= value <= 1.0):  # NaN fails both comparisons
        raise InvalidArgument(name, f"must be in [0, 1], got {value}")


# -- history -----------------------------------------------------------------------------------


def known(snap: Snapshot, ids: Sequence[str]) -> np.ndarray:
    """Indices of the ids the version knows (unknown ones are ignored)."""
    index = snap.item_index
    return np.fromiter((i for i in map(index.get, ids) if i is not None), np.int32)


def user_history(
    snap: Snapshot, live: LiveHistory | None, user_id: str, recent: Sequence[str] = ()
) -> tuple[int, sp.csr_matrix, Mapping[int, str]]:
    """(user index or -1, 1-row CSR of training row + live events + session items, the latest
    event kind per item for explanations)."""
    user = snap.user_index.get(user_id, -1)
    items = live.get(user_id) if live is not None else None
    if user >= 0 and not items and not recent:
        return user, snap.user_row(user), {}
    if items and not recent:
        # The same live history (a new dict per recorded event) gives the same row object,
        # which a route may have ranked already (rankings.RankingCache keeps them by row).
        hit = snap.live_rows.get(user_id)
        if hit is not None and hit[0] is items:
            return user, hit[1], hit[2]
    h = snap.history
    idx: list[np.ndarray] = []
    wts: list[np.ndarray] = []
    kinds: dict[int, str] = {}
    if user >= 0:
        a, b = h.indptr[user], h.indptr[user + 1]
        if b > a:
            idx.append(h.indices[a:b])
            wts.append(h.data[a:b])
    if items:
        idx.append(np.fromiter(items.keys(), np.int32, len(items)))
        wts.append(np.fromiter((v.weight for v in items.values()), np.float32, len(items)))
        kinds = {i: v.event_type for i, v in items.items()}
    if recent:
        r = known(snap, recent)
        if len(r):
            idx.append(r)
            wts.append(np.ones(len(r), np.float32))
            for i in r.tolist():
                kinds.setdefault(i, SESSION)
    if not idx:
        return user, snap.empty_row, kinds
    indices = np.concatenate(idx) if len(idx) > 1 else idx[0]
    data = np.concatenate(wts) if len(wts) > 1 else wts[0]
    row = sp.csr_matrix((data, indices, np.array([0, len(indices)])), shape=(1, snap.n_items))
    if len(idx) > 1:
        row.sum_duplicates()
    if items and not recent:
        snap.live_rows[user_id] = (items, row, kinds)
    return user, row, kinds


# -- recommend ---------------------------------------------------------------------------------


def merged_deny(snap: Snapshot, exclude: Sequence[str], unavailable: np.ndarray | None):
    """The request's exclusions plus the catalogue's unavailable items (already sorted
    indices, `catalogue.Catalogue.deny`): one deny list for the top-K."""
    deny = known(snap, exclude) if exclude else None
    if unavailable is None:
        return deny
    return unavailable if deny is None or not len(deny) else np.concatenate((unavailable, deny))


def recommend(
    snap: Snapshot,
    live: LiveHistory | None,
    experiments: tuple[Experiment, ...],
    q: Query,
    catalogue: Catalogue | None = None,
) -> Answer:
    r = router.route(snap, experiments, q.user_id, q.model)
    user, row, kinds = user_history(snap, live, q.user_id, q.recent_item_ids)
    choice = router.choose(snap, r, row.nnz)
    answer = Answer(q.user_id, [], choice.name, snap.version, choice.tier, r.experiment, r.variant)
    allow = known(snap, q.allow_item_ids) if q.allow_item_ids else None
    if allow is not None and len(allow) == 0:
        return answer  # none of the allowed items exists in this version
    unavailable = catalogue.deny(snap) if catalogue is not None else None
    deny = merged_deny(snap, q.exclude_item_ids, unavailable)
    if r.pair is not None and choice.tier == router.PERSONALIZED:
        answer.items, answer.teams = interleaved(
            snap, r.pair, user, row, kinds, q, catalogue, allow, deny
        )
        return answer
    answer.items = ranked(snap, choice, user, row, kinds, q, catalogue, allow, deny)
    return answer


def ranked(
    snap: Snapshot, choice: router.Choice, user: int, row, kinds, q: Query, catalogue, allow, deny
) -> list[Scored]:
    """The list ``choice`` answers (diversified, explained, with just-added items placed)."""
    if q.diversity > 0:
        rec = snap.rank(choice.model, user, row, diversify.candidates(q.k), allow, deny)
        picked, picked_scores = diversify.rerank(
            rec.items, rec.scores, q.k, q.diversity, diversify.for_snapshot(snap)
        )
    else:
        rec = snap.rank(choice.model, user, row, q.k, allow, deny)
        picked, picked_scores = rec.items, rec.scores
    items = picked.tolist()
    scores = np.asarray(picked_scores).tolist()
    new = [] if allow is not None else new_items.scored(catalogue, snap, row, q.exclude_item_ids)
    extra, by_score = new_items.for_list(choice.model, snap, user, row, q.k, new, deny)
    if not items and not extra:
        return []
    reasons: list[Reason | bytes | None] = [None] * len(items)
    if q.explain and items:
        reasons = explain_items(choice.model, user, row, picked, snap, kinds, choice.tier)
    titles, cats, ids = snap.titles, snap.categories, snap.item_ids
    conf = snap.confidences(choice.name, choice.key, scores)
    out = [
        Scored(ids[i], s, c, titles[i], cats[i], why)
        for i, s, c, why in zip(items, scores, conf, reasons, strict=True)
    ]
    if extra:
        out = new_items.place(out, scored_new(snap, row, kinds, extra, q), q.k, by_score)
    return out


def interleaved(
    snap: Snapshot, pair, user: int, row, kinds, q: Query, catalogue, allow, deny
) -> tuple[list[Scored], list[int]]:
    """Both variants' lists, each as that variant serves it (same filters, exclusions and k),
    merged by team draft: the items and, per item, the team (0 = first variant) that placed it.
    An item keeps the score, confidence and explanation of the variant that placed it."""
    lists = []
    for x in pair:
        choice = router.Choice(x.name, x.model, router.PERSONALIZED, x.key)
        lists.append(ranked(snap, choice, user, row, kinds, q, catalogue, allow, deny))
    # A fresh seed per request (user and clock): the coin flips must not depend on the lists
    # nor repeat across a user's impressions; the teams are recorded with the impression, so
    # the draw never needs replaying.
    rng = random.Random(f"{q.user_id}:{time.time_ns()}")
    a, b = ([s.item_id for s in got] for got in lists)
    ids, teams = team_draft(a, b, q.k, rng)
    placed = [{s.item_id: s for s in got} for got in lists]
    return [placed[t][i] for i, t in zip(ids, teams, strict=True)], teams


def scored_new(snap: Snapshot, row, kinds, extra: list, q: Query) -> list[Scored]:
    """Answer entries for just-added items; confidence by the content model's rule."""
    conf = snap.confidences("content", "content", [n.score for n in extra])
    why = new_items.reasons(snap, row, kinds, extra) if q.explain else [None] * len(extra)
    return [
        Scored(n.item_id, n.score, c, n.title, n.categories, w)
        for n, c, w in zip(extra, conf, why, strict=True)
    ]


def explain_items(
    model, user: int, row, items, snap: Snapshot, kinds, tier: str = router.PERSONALIZED
) -> list[Reason] | list[bytes]:
    """The reasons for ``items``: a hybrid's from the evidence of the ranking it just
    answered (`explain.hybrid_reasons`, vectorised over the items), else the model's
    explanations described; the popularity tier says it will personalise."""
    if isinstance(model, Hybrid):
        if user >= 0:
            got = kept_reasons(model, user, row, items, snap, kinds)
        else:
            got = hybrid_reasons(model, user, row, items, snap, kinds)
        if got is not None:
            return got
        got = model.blend_parts(user, row, items)
        if got is not None:
            return blend_reasons(*got)
    reasons = [describe(e, snap, kinds) for e in model.explain(user, row, items)]
    return popular_now(reasons) if tier == router.POPULARITY else reasons


def kept_reasons(model, user: int, row, items, snap: Snapshot, kinds) -> list[bytes] | None:
    """A known user's hybrid reasons, serialised: those made for this row before
    (`explained`), the others made now and kept. None when the ranking is not at hand."""
    route = id(model)
    kept = snap.explained.get(route, user, row)
    wanted = np.asarray(items).tolist()
    missing = [i for i in wanted if i not in kept]
    if missing:
        made = hybrid_reasons(model, user, row, np.asarray(missing), snap, kinds)
        if made is None:
            return None
        new = {i: serialized(r) for i, r in zip(missing, made, strict=True)}
        snap.explained.put(route, user, row, new)
        kept = {**kept, **new}
    return [kept[i] for i in wanted]


confidence = relative  # SimilarItems' rule (`snapshot.relative`); lists use `confidences`


# -- similar items -----------------------------------------------------------------------------


def similar(
    snap: Snapshot, item_id: str, k: int, model: str = "", catalogue: Catalogue | None = None
) -> SimilarAnswer:
    check_id(item_id, "item_id")
    check_k(k)
    name = model or "item_cf"
    if name not in SIMILAR_MODELS:
        raise InvalidArgument("model", f"similar items come from {' or '.join(SIMILAR_MODELS)}")
    m = snap.models.get(name)
    if m is None:
        raise NotFound(
            f"model {name!r} is not loaded (version {snap.version}); "
            f"available: {', '.join(sorted(snap.models))}"
        )
    item = snap.item_index.get(item_id)
    if item is None:
        vector = new_items.vector_of(catalogue, snap, item_id) if model in ("", "content") else None
        if vector is None:
            raise NotFound(f"item {item_id!r} is not in model version {snap.version}")
        # an item added after training: its neighbours by content
        name, m, item = "content", new_items.ByVector(new_items.content_of(snap), vector), -1
    deny = catalogue.deny(snap) if catalogue is not None else None
    got, scores = similar_allowed(m, item, k, deny, snap.n_items)
    ref = snap.reference(f"similar:{name}")
    ids, titles, cats = snap.item_ids, snap.titles, snap.categories
    items = [
        Scored(ids[i], s, confidence(s, ref), titles[i], cats[i])
        for i, s in zip(got.tolist(), scores.tolist(), strict=True)
    ]
    return SimilarAnswer(item_id, items, name, snap.version)


def similar_allowed(m, item: int, k: int, deny: np.ndarray | None, n_items: int):
    """``m.similar_items`` without the ``deny`` items (sorted), still k when k are eligible.
    similar_items takes no deny list: ask for 4k first (denied items are rarely many among
    the nearest), then, when that ran short, for k more than could be denied."""
    if deny is None:
        r = m.similar_items(item, k)
        return np.asarray(r.items), np.asarray(r.scores)
    for want in (min(4 * k, k + len(deny)), k + len(deny)):
        want = min(want, n_items)
        r = m.similar_items(item, want)
        got, scores = np.asarray(r.items), np.asarray(r.scores)
        at = np.minimum(np.searchsorted(deny, got), len(deny) - 1)
        keep = deny[at] != got
        if keep.sum() >= k or len(got) < want:  # enough, or the model has no more
            break
    return got[keep][:k], scores[keep][:k]


__all__ = ["Answer", "Query", "Scored", "SimilarAnswer", "recommend", "similar"]

"""Model explanations (`recsys_core.models.Explanation`) -> readable text + structured
evidence with item ids and catalog titles (transport-agnostic; the servicer makes protos)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from recsys_core.models import Explanation
from recsys_core.models.registry import REGISTRY
from recsys_server.config import TRAINING
from recsys_server.snapshot import Snapshot

NO_BLEND_SIGNAL = "Blend of the models (no strong signal for this item)"
COMPONENT_NAMES = {name: spec.label for name, spec in REGISTRY.items()}


@dataclass(slots=True)
class ItemReason:
    item_id: str
    title: str
    similarity: float
    contribution: float


@dataclass(slots=True)
class SimilarUsers:
    count: int
    neighbours: int
    mean_similarity: float
    max_similarity: float


@dataclass(slots=True)
class LatentFactors:
    factors: list[int]
    contributions: list[float]
    shares: list[float]
    closest_item_id: str = ""
    closest_item_title: str = ""
    closest_similarity: float = 0.0


@dataclass(slots=True)
class Trending:
    rank: int
    half_life_days: float
    window_start: int
    window_end: int


@dataclass(slots=True)
class ContentMatch:
    categories: list[str]
    items: list[ItemReason] = field(default_factory=list)


@dataclass(slots=True)
class Component:
    model: str
    share: float
    contribution: float


@dataclass(slots=True)
class Reason:
    text: str
    kind: str
    items: list[ItemReason] = field(default_factory=list)
    similar_users: SimilarUsers | None = None
    latent_factors: LatentFactors | None = None
    trending: Trending | None = None
    components: list[Component] = field(default_factory=list)
    content: ContentMatch | None = None
    new_item: bool = False


def join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


MAX_TEXT = 120
"""An explanation's text is one line of at most this many characters."""
MAX_TITLE = 40
"""Titles longer than this are shortened in the text (the structured fields keep them)."""
COLD_SUFFIX = "we will personalise after a few more interactions"
NEW_SUFFIX = " (new to you: just added)"


def short(title: str, n: int = MAX_TITLE) -> str:
    return title if len(title) <= n else title[: n - 1].rstrip() + "…"


def fit(text: str) -> str:
    """One line of at most MAX_TEXT characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1].rstrip() + "…"


def verb_of(snap: Snapshot, kinds: Mapping[int, str], item: int) -> str:
    """The verb of what the user last did to ``item``: their live event's, else training's."""
    verbs = snap.verbs
    return verbs.get(kinds.get(item, TRAINING)) or verbs.get(TRAINING) or "chose"


def phrase(verb: str, titles: list[str]) -> str:
    """ "bought Heat and Casino"; a verb with ``{}`` puts the titles there."""
    t = join(titles)
    return verb.replace("{}", t, 1) if "{}" in verb else f"{verb} {t}"


def past(verb: str) -> str:
    """The verb without a titles slot: "which you added to your cart"."""
    return " ".join(verb.replace("{}", "").split())


def because(snap: Snapshot, kinds: Mapping[int, str], items, n: int = 2) -> str:
    """ "Because you bought Heat and watched Casino": the first ``n`` of ``items`` grouped by
    verb, in order."""
    groups: dict[str, list[str]] = {}
    for i in list(items)[:n]:
        groups.setdefault(verb_of(snap, kinds, i), []).append(short(snap.title(i)))
    return "Because you " + " and ".join(phrase(v, t) for v, t in groups.items())


def describe(e: Explanation, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    """``kinds``: the user's latest event type per item index (for the verb)."""
    text = DESCRIBERS.get(e.kind)
    if text is None:
        return Reason(text=f"Recommended by {e.kind}", kind=e.kind)
    return text(e.fields, snap, kinds)


def _item_cf(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    items = [
        ItemReason(snap.item_ids[i], snap.titles[i], float(s), float(c))
        for i, s, c in zip(f["items"], f["similarities"], f["contributions"], strict=True)
    ]
    if not items:
        return Reason(
            "No close link to your history; added to complete your list", "because_you_interacted"
        )
    text = because(snap, kinds, f["items"], len(f["items"]))
    return Reason(text, "because_you_interacted", items=items)


def _user_cf(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    su = SimilarUsers(
        int(f["n_similar_users"]),
        int(f["n_neighbours"]),
        float(f["mean_similarity"]),
        float(f["max_similarity"]),
    )
    if su.neighbours == 0:
        text = "No users with similar taste yet"
    elif su.count == 0:
        text = f"None of the {su.neighbours} users with the most similar taste chose this yet"
    else:
        text = (
            f"{su.count} of {su.neighbours} users with similar taste chose this "
            f"(similarity {su.mean_similarity:.2f})"
        )
    return Reason(text, "similar_users", similar_users=su)


def _svd(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    lf = LatentFactors(
        [int(x) for x in f["factors"]],
        [float(x) for x in f["contributions"]],
        [float(x) for x in f["shares"]],
    )
    text = f"Matches your taste (factors {', '.join(str(x) for x in lf.factors)})"
    closest = f.get("closest_item")
    if closest is not None:
        lf.closest_item_id = snap.item_ids[closest]
        lf.closest_item_title = snap.titles[closest]
        lf.closest_similarity = float(f["closest_similarity"])
        text += f"; closest to {snap.title(closest)} you liked"
    return Reason(text, "latent_factors", latent_factors=lf)


def _trending(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    t = Trending(
        int(f["rank"]), float(f["half_life_days"]), int(f["window_start"]), int(f["window_end"])
    )
    end = datetime.fromtimestamp(t.window_end, UTC)
    if math.isfinite(t.half_life_days):
        text = f"Trending: #{t.rank} as of {end:%Y-%m-%d} ({t.half_life_days:g}-day half-life)"
    else:
        text = f"Popular: #{t.rank} as of {end:%Y-%m-%d}"
    return Reason(text, "trending", trending=t)


def _blend(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    names = list(f["contributions"])
    contrib = np.array([[float(f["contributions"][n])] for n in names], np.float64)
    shares = np.array([[float(f["shares"].get(n, 0.0))] for n in names], np.float64)
    return blend_reasons(names, contrib, shares, bool(f.get("cold_start")))[0]


def _content(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    items = [
        ItemReason(snap.item_ids[i], snap.titles[i], 0.0, float(c))
        for i, c in zip(f["items"], f["item_contributions"], strict=True)
    ]
    if not f["labels"]:
        return Reason("Nothing in common with your history; added to complete your list", "content")
    text = f"Matches your interest in {join(list(f['labels']))}"
    if items:
        text += f", like {short(snap.title(f['items'][0]))}"
    match = ContentMatch(list(f["categories"]), items)
    return Reason(fit(text), "content", items=items, content=match)


DESCRIBERS = {
    "because_you_interacted": _item_cf,
    "similar_users": _user_cf,
    "latent_factors": _svd,
    "trending": _trending,
    "blend": _blend,
    "content": _content,
}
"""Explanation kind (``ModelSpec.explanation``) -> its text and structured evidence."""


def blend_reasons(
    names: list[str], contrib: np.ndarray, shares: np.ndarray, cold_start: bool
) -> list[Reason]:
    """One "blend" reason per column of ``contrib`` / ``shares`` (parts x items: each part's
    weighted score at the item and its share of the item's score). Vectorised because the
    hybrid is the default model and this runs for every item of most responses: the per-item
    Python work is a sort of a few tuples and a join of preformatted labels."""
    # Parts by share, largest first, ties by name: a stable sort of the name-ordered parts.
    by_name = sorted(range(len(names)), key=names.__getitem__)
    ranked = np.asarray(by_name)[np.argsort(-shares[by_name], axis=0, kind="stable")]
    pcts = np.rint(shares * 100).astype(np.int64).T.tolist()  # each "{share:.0%}"
    visible = (shares >= 0.005).T.tolist()
    labels = [COMPONENT_NAMES.get(n, n) for n in names]
    suffix = " (short history)" if cold_start else ""
    out = []
    cols = zip(contrib.T.tolist(), shares.T.tolist(), pcts, visible, ranked.T.tolist(), strict=True)
    for c, sh, pct, vis, order in cols:
        words = [f"{labels[p]} {pct[p]}%" for p in order if vis[p]]
        text = "Blend of " + ", ".join(words) if words else NO_BLEND_SIGNAL
        comps = [Component(names[p], sh[p], c[p]) for p in order]
        out.append(Reason(text + suffix, "blend", components=comps))
    return out


# -- the hybrid: the evidence of its parts, ordered by their share of each item's score --------

HISTORY_PARTS = ("item_cf", "ease")
INTEREST_SHARE = 0.2
"""A category is one of the user's interests when at least this share of their history (and
two items) has it; the three most frequent such categories count."""


@dataclass(slots=True)
class ContentIndex:
    names: list[str]
    indptr: np.ndarray
    indices: np.ndarray
    trained: np.ndarray
    """Per item: it has training interactions (else it is new)."""


_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def content_index(snap: Snapshot) -> ContentIndex:
    """The catalogue's categories as an items x categories CSR, built once per version."""
    ix = _INDEXES.get(snap)
    if ix is None:
        vocab: dict[str, int] = {}
        indptr = np.zeros(snap.n_items + 1, np.int64)
        flat: list[int] = []
        for i, cats in enumerate(snap.categories):
            flat.extend(vocab.setdefault(c, len(vocab)) for c in cats)
            indptr[i + 1] = len(flat)
        counts = np.bincount(snap.history.indices, minlength=snap.n_items)
        ix = ContentIndex(list(vocab), indptr, np.asarray(flat, np.int64), counts > 0)
        _INDEXES[snap] = ix  # a benign race: two threads may both build it
    return ix


def interests(ix: ContentIndex, row) -> list[tuple[str, list[int]]]:
    """The user's main categories, most frequent first, each with its history items (up to
    three, heaviest first)."""
    h = row.indices
    if len(h) == 0 or not ix.names:
        return []
    starts = ix.indptr[h]
    lens = ix.indptr[h + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return []
    owner = np.repeat(np.arange(len(h)), lens)
    flat = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(starts, lens)
    cats = ix.indices[flat]
    counts = np.bincount(cats, minlength=len(ix.names))
    need = max(2.0, INTEREST_SHARE * np.count_nonzero(lens))
    top = [int(c) for c in np.argsort(-counts, kind="stable")[:3] if counts[c] >= need]
    out = []
    for c in top:
        members = owner[cats == c]
        heavy = members[np.argsort(-row.data[members], kind="stable")[:3]]
        out.append((ix.names[c], h[heavy].tolist()))
    return out


def trend_text(pop) -> str:
    hl = float(pop.config.half_life_days) if pop is not None else math.inf
    if not math.isfinite(hl):
        return "Popular overall"
    if hl <= 2:
        return "Trending today"
    if hl <= 10:
        return "Trending this week"
    if hl <= 45:
        return "Trending this month"
    return "Popular in recent months"


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def hybrid_reasons(model, user: int, row, items, snap: Snapshot, kinds) -> list[Reason] | None:
    """One reason per item from the blend the hybrid just ranked: the text leads with the
    strongest concrete reason (history items, similar users, factor-space neighbour, content)
    by its part's share of the item's score, adds the next one when it fits; the structured
    fields carry all of them. None when the ranking is not at hand."""
    got = model.blend_parts(user, row, items)
    if got is None:
        return None
    names, contrib, shares, cold = got
    ev = model.evidence(user, row, items, names)
    ix = content_index(snap)
    likes = interests(ix, row)
    pos = {n: p for p, n in enumerate(names)}
    k = contrib.shape[1]
    item_list = np.asarray(items).tolist()
    sh = shares.T.tolist()
    comps = _components(names, contrib, shares)
    # history items per item: (source, share of the item's score, similarity), both parts
    hist: list[dict[int, list[float]]] = [{} for _ in range(k)]
    for n in HISTORY_PARTS:
        e = ev.get(n)
        if e is None:
            continue
        scores = e["scores"].astype(np.float64)
        scale = np.divide(contrib[pos[n]], scores, out=np.zeros(k), where=scores > 0)
        total = contrib.sum(axis=0)
        scale = np.divide(scale, total, out=np.zeros(k), where=total > 0)
        blend = e["contributions"] * scale[:, None]
        for j, (ss, cc, sims) in enumerate(
            zip(e["sources"].tolist(), blend.tolist(), e["similarities"].tolist(), strict=True)
        ):
            d = hist[j]
            for s, c, sim in zip(ss, cc, sims, strict=True):
                if s >= 0 and c > 0:
                    old = d.get(s)
                    d[s] = [c + (old[0] if old else 0.0), max(sim, old[1] if old else sim)]
    ucf, svd, pop = ev.get("user_cf"), ev.get("svd"), ev.get("popularity")
    if ucf is not None:
        n_nb = int(ucf["neighbours"])
        counts = ucf["counts"].tolist()
        means, peaks = ucf["mean_similarity"].tolist(), ucf["max_similarity"].tolist()
    if svd is not None:
        closest, csim = svd["closest"].tolist(), svd["closest_similarity"].tolist()
    if pop is not None:
        ranks = pop["rank"].tolist()
        pm = model.components.get("popularity")
        trend = trend_text(pm)
        hl, win = float(pm.config.half_life_days), pm.window_
    ids, titles = snap.item_ids, snap.titles
    out = []
    for j, it in enumerate(item_list):
        shares_j = sh[j]
        r = Reason("", "blend", components=comps[j])
        cands: list[tuple] = []  # share, order, text (or a callable making it), concrete
        d = hist[j]
        if d:
            top = sorted(d.items(), key=lambda x: (-x[1][0], x[0]))[:3]
            r.items = [ItemReason(ids[s], titles[s], v[1], v[0]) for s, v in top]
            share = sum(shares_j[pos[n]] for n in HISTORY_PARTS if n in pos)
            srcs = [s for s, _ in top]
            cands.append((share, 0, lambda srcs=srcs: because(snap, kinds, srcs), True))
        if ucf is not None:
            c = counts[j]
            r.similar_users = SimilarUsers(c, n_nb, means[j], peaks[j])
            if c > 0:
                text = f"Popular with {c} of {n_nb} people who share your taste"
                cands.append((shares_j[pos["user_cf"]], 1, text, True))
        if svd is not None and closest[j] >= 0:
            c = closest[j]
            lf = LatentFactors([], [], [], ids[c], titles[c], csim[j])
            if "factors" in svd:
                lf.factors = svd["factors"][j].tolist()
                lf.contributions = svd["contributions"][j].tolist()
                lf.shares = svd["shares"][j].tolist()
            r.latent_factors = lf
            if csim[j] > 0:
                verb = past(verb_of(snap, kinds, c))
                text = f"Close to {short(snap.title(c))}, which you {verb}"
                cands.append((shares_j[pos["svd"]], 2, text, True))
        if likes:
            cats = snap.categories[it]
            matched = [(name, hs) for name, hs in likes if name in cats]
            if matched:
                seen: dict[int, int] = {}
                for _, hs in matched:
                    for h in hs:
                        seen[h] = seen.get(h, 0) + 1
                r.content = ContentMatch(
                    [name for name, _ in matched],
                    [
                        ItemReason(ids[h], titles[h], n / len(matched), 0.0)
                        for h, n in list(seen.items())[:3]
                    ],
                )
                share = shares_j[pos["content"]] if "content" in pos else 0.0
                text = "Matches your interest in " + join([n for n, _ in matched[:2]])
                cands.append((share, 3, text, True))
        if pop is not None:
            r.trending = Trending(ranks[j], hl, int(win[0]), int(win[1]))
            cands.append((shares_j[pos["popularity"]], 4, trend, False))
        r.new_item = not bool(ix.trained[it])
        r.text = _text(cands, cold, r.new_item)
        out.append(r)
    return out


def said(cand) -> str:
    """A candidate's text; made on demand when it is a callable (most are never shown)."""
    t = cand[2]
    return t() if callable(t) else t


def _text(cands: list[tuple], cold: bool, new: bool) -> str:
    suffix = NEW_SUFFIX if new else ""
    ranked = sorted(cands, key=lambda c: (-c[0], c[1]))
    concrete = [c for c in ranked if c[3]]
    if cold:
        popular_first = not concrete or (ranked[0][1] == 4)
        lead = "Popular right now" if popular_first else said(concrete[0])
        text = f"{lead}; {COLD_SUFFIX}"
        if len(text) + len(suffix) > MAX_TEXT:
            text = f"Popular right now; {COLD_SUFFIX}"
        return fit(text + suffix)
    if not ranked:
        return fit(NO_BLEND_SIGNAL + suffix)
    lead = concrete[0] if concrete else ranked[0]
    text = said(lead)
    for c in ranked:
        if c is lead or (not c[3] and c[0] < 0.05):
            continue
        longer = f"{text}; {_lower(said(c))}"
        if len(longer) + len(suffix) <= MAX_TEXT:
            text = longer
        break
    return fit(text + suffix)


def _components(names: list[str], contrib: np.ndarray, shares: np.ndarray) -> list:
    """Each item's components, largest share first (ties by name)."""
    by_name = sorted(range(len(names)), key=names.__getitem__)
    ranked = np.asarray(by_name)[np.argsort(-shares[by_name], axis=0, kind="stable")]
    return [
        [Component(names[p], sh[p], c[p]) for p in order]
        for c, sh, order in zip(
            contrib.T.tolist(), shares.T.tolist(), ranked.T.tolist(), strict=True
        )
    ]


def popular_now(reasons: list[Reason]) -> list[Reason]:
    """The popularity tier (no history): each item's trending reason, said for a newcomer."""
    for r in reasons:
        rank = f" (#{r.trending.rank})" if r.trending is not None else ""
        r.text = fit(f"Popular right now{rank}; {COLD_SUFFIX}")
    return reasons

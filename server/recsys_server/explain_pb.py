"""Explanations as protobuf (`Reason` -> `pb.Explanation`): the servicer fills responses with
it, and `scoring` serialises the hybrid's reasons once for `explained`."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server import explain as ex


def set_ts(t: Timestamp, seconds: float) -> None:
    whole = int(seconds // 1)
    t.seconds, t.nanos = whole, round((seconds - whole) * 1e9) % 1_000_000_000


# The messages are filled in place (``add``, field by field): building them from keyword
# arguments and nested constructors cost about twice as much per item with upb, and a response
# carries ten items with an explanation each.


def fill_explanation(out: pb.Explanation, r: ex.Reason) -> None:
    out.text = r.text
    out.kind = r.kind
    for i in r.items:
        out.items.add(
            item_id=i.item_id, title=i.title, similarity=i.similarity, contribution=i.contribution
        )
    if r.similar_users is not None:
        su, o = r.similar_users, out.similar_users
        o.count, o.neighbours = su.count, su.neighbours
        o.mean_similarity, o.max_similarity = su.mean_similarity, su.max_similarity
    if r.latent_factors is not None:
        lf, o = r.latent_factors, out.latent_factors
        o.factors.extend(lf.factors)
        o.contributions.extend(lf.contributions)
        o.shares.extend(lf.shares)
        o.closest_item_id, o.closest_item_title = lf.closest_item_id, lf.closest_item_title
        o.closest_similarity = lf.closest_similarity
    if r.trending is not None:
        t, o = r.trending, out.trending
        o.rank, o.half_life_days = t.rank, t.half_life_days
        set_ts(o.window_start, t.window_start)
        set_ts(o.window_end, t.window_end)
    for c in r.components:
        out.components.add(model=c.model, share=c.share, contribution=c.contribution)
    if r.content is not None:
        o = out.content
        o.categories.extend(r.content.categories)
        for i in r.content.items:
            o.items.add(item_id=i.item_id, title=i.title, similarity=i.similarity)
    if r.new_item:
        out.new_item = True


def serialized(r: ex.Reason) -> bytes:
    out = pb.Explanation()
    fill_explanation(out, r)
    return out.SerializeToString()

"""The gRPC servicer: protobuf <-> core types, nothing else. Errors are raised as
`recsys_server.errors` and mapped to status codes by `recsys_server.interceptors`."""

from __future__ import annotations

import time

import grpc

from recsys_core.datastore import ItemChange
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_server import wire
from recsys_server.catalogue import ItemView
from recsys_server.core import Interaction, RecommenderCore
from recsys_server.experiments.report import Report
from recsys_server.explain_pb import fill_explanation, set_ts
from recsys_server.interceptors import Auth, Observe
from recsys_server.router import COLD_START, PERSONALIZED, POPULARITY
from recsys_server.scoring import Answer, Query, Scored

TIER = {
    PERSONALIZED: pb.FALLBACK_TIER_PERSONALIZED,
    COLD_START: pb.FALLBACK_TIER_COLD_START,
    POPULARITY: pb.FALLBACK_TIER_POPULARITY,
}
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


def query_from(r: pb.RecommendRequest) -> Query:
    return Query(
        user_id=r.user_id,
        k=r.k,
        model=r.model,
        exclude_item_ids=r.exclude_item_ids,
        allow_item_ids=r.allow_item_ids,
        recent_item_ids=r.recent_item_ids,
        explain=r.explain,
        diversity=r.diversity,
    )


def add_scored(items, s: Scored) -> None:
    """Appends ``s`` to a repeated ScoredItem field."""
    m = items.add(item_id=s.item_id, score=s.score, confidence=s.confidence, title=s.title)
    if s.categories:
        m.categories.extend(s.categories)
    if isinstance(s.reason, bytes):  # made for an earlier request (`explained`)
        m.explanation.MergeFromString(s.reason)
    elif s.reason is not None:
        fill_explanation(m.explanation, s.reason)


def answer_bytes(a: Answer) -> bytes:
    """The serialised RecommendResponse of ``a``: what ``answer_pb(a).SerializeToString()``
    gives, written directly (`recsys_server.wire`)."""
    return wire.recommend_response(a, TIER[a.tier])


def answer_pb(a: Answer) -> pb.RecommendResponse:
    out = pb.RecommendResponse(
        user_id=a.user_id,
        model=a.model,
        model_version=a.version,
        fallback_tier=TIER[a.tier],
        experiment=a.experiment,
        variant=a.variant,
        recommendation_id=a.recommendation_id,
    )
    for s in a.items:
        add_scored(out.items, s)
    return out


class RecommenderService(pb_grpc.RecommenderServicer):
    def __init__(self, core: RecommenderCore) -> None:
        self.core = core

    # Recommend and RecommendBatch answer with the response's bytes (`wire`; the serializer
    # passes bytes through): building the message item by item cost more than ranking.
    async def Recommend(self, request, context):
        return answer_bytes(self.core.recommend(query_from(request)))

    async def RecommendBatch(self, request, context):
        left = context.time_remaining()
        deadline = None if left is None else time.monotonic() + left
        queries = [query_from(r) for r in request.requests]
        answers = await self.core.recommend_batch(queries, deadline)
        return b"".join(wire.message(b"\x0a", answer_bytes(a)) for a in answers)

    async def SimilarItems(self, request, context):
        a = self.core.similar(request.item_id, request.k, request.model)
        out = pb.SimilarItemsResponse(item_id=a.item_id, model=a.model, model_version=a.version)
        for s in a.items:
            add_scored(out.items, s)
        return out

    async def RecordInteractions(self, request, context):
        events = [
            Interaction(
                event_id=e.event_id,
                user_id=e.user_id,
                item_id=e.item_id,
                event_type=e.event_type,
                timestamp=(
                    e.timestamp.seconds + e.timestamp.nanos / 1e9
                    if e.HasField("timestamp")
                    else None
                ),
                rating=e.rating,
                recommendation_id=e.recommendation_id,
                position=e.position,
            )
            for e in request.events
        ]
        recorded, duplicates = await self.core.record(events)
        return pb.RecordInteractionsResponse(recorded=recorded, duplicates=duplicates)

    async def ListModels(self, request, context):
        a = self.core.models()
        out = pb.ListModelsResponse(version=a.version, default_model=a.default_model)
        for m in a.models:
            info = out.models.add(name=m.name, version=m.version)
            info.trained_at.FromDatetime(m.trained_at)
            info.metrics.update(m.metrics)
            info.params.update(m.params)
        return out

    async def ReloadModels(self, request, context):
        r = await self.core.reload()
        return pb.ReloadModelsResponse(version=r.version, changed=r.changed, message=r.message)

    async def UpsertItems(self, request, context):
        changes = [
            ItemChange(
                i.item_id,
                True,
                i.title,
                tuple(i.categories),
                dict(i.attributes),
                i.available if i.HasField("available") else None,
            )
            for i in request.items
        ]
        changed, unchanged = await self.core.upsert_items(changes)
        return pb.UpsertItemsResponse(changed=changed, unchanged=unchanged)

    async def SetItemAvailability(self, request, context):
        changed, unchanged = await self.core.set_availability(
            list(request.item_ids), request.available
        )
        return pb.SetItemAvailabilityResponse(changed=changed, unchanged=unchanged)

    async def GetItem(self, request, context):
        out = pb.GetItemResponse()
        fill_item(out.item, self.core.get_item(request.item_id))
        return out

    async def ListItems(self, request, context):
        available = request.available if request.HasField("available") else None
        views, token = self.core.list_items(request.page_size, request.page_token, available)
        out = pb.ListItemsResponse(next_page_token=token)
        for v in views:
            fill_item(out.items.add(), v)
        return out

    async def GetUserHistory(self, request, context):
        h = await self.core.user_history(request.user_id, request.limit)
        out = pb.GetUserHistoryResponse(user_id=h.user_id, model_version=h.version)
        for t in h.training_items:
            out.training_items.add(item_id=t.item_id, title=t.title, weight=t.weight)
        for e in h.events:
            m = out.events.add(
                event_id=e.event_id,
                item_id=e.item_id,
                title=e.title,
                event_type=e.event_type,
                rating=e.rating,
                trained=e.trained,
            )
            set_ts(m.timestamp, e.timestamp)
        return out

    async def GetExperimentReport(self, request, context):
        return report_pb(await self.core.experiment_report(request.experiment))


def report_pb(r: Report) -> pb.GetExperimentReportResponse:
    out = pb.GetExperimentReportResponse(
        experiment=r.experiment,
        kind=r.kind,
        control=r.control,
        attribution_hours=r.attribution_hours,
        impressions_dropped=r.impressions_dropped,
    )
    set_ts(out.generated_at, r.generated_at)
    for v in r.variants:
        out.variants.add(
            variant=v.variant,
            model=v.model,
            share=v.share,
            users=v.users,
            impressions=v.impressions,
            clicks=v.clicks,
            conversions=v.conversions,
            value=v.value,
            ctr=v.ctr,
            conversions_per_user=v.conversions_per_user,
            value_per_user=v.value_per_user,
        )
    for c in r.comparisons:
        s = c.comparison
        out.comparisons.add(
            metric=s.metric,
            variant=c.variant,
            control_value=s.control,
            variant_value=s.variant,
            difference=s.difference,
            relative_difference=s.relative,
            ci95=pb.Interval(low=s.ci95.low, high=s.ci95.high),
            always_valid=pb.Interval(low=s.always_valid.low, high=s.always_valid.high),
            p_value=s.p_value,
            significant=s.significant,
            mde_relative=s.mde_relative,
        )
    if r.sample_ratio is not None:
        sr = r.sample_ratio
        out.sample_ratio.observed.extend(sr.observed)
        out.sample_ratio.expected_shares.extend(sr.expected_shares)
        out.sample_ratio.chi_square = sr.chi_square
        out.sample_ratio.p_value = sr.p_value
        out.sample_ratio.mismatch = sr.mismatch
    if r.interleaving is not None:
        p = r.interleaving.preference
        out.interleaving.CopyFrom(
            pb.InterleavingResult(
                model_a=r.interleaving.model_a,
                model_b=r.interleaving.model_b,
                wins_a=p.wins_a,
                wins_b=p.wins_b,
                ties=p.ties,
                preference_a=p.preference_a,
                ci95=pb.Interval(low=p.ci95.low, high=p.ci95.high),
                always_valid=pb.Interval(low=p.always_valid.low, high=p.always_valid.high),
                p_value=p.p_value,
            )
        )
    return out


def fill_item(out: pb.Item, v: ItemView) -> None:
    out.item_id, out.title, out.available, out.in_model = (
        v.item_id,
        v.title,
        v.available,
        v.in_model,
    )
    out.categories.extend(v.categories)
    out.attributes.update(v.attributes)
    if v.updated_at is not None:
        set_ts(out.updated_at, v.updated_at)


def serializer(response):
    """``response.SerializeToString``, passing bytes already serialised through."""
    encode = response.SerializeToString

    def serialize(message) -> bytes:
        return message if type(message) is bytes else encode(message)

    return serialize


def add_to_server(
    service: RecommenderService, server: grpc.aio.Server, observe: Observe, auth: Auth
) -> None:
    """Registers the service with ``auth`` then ``observe`` around every method (what the
    generated ``add_RecommenderServicer_to_server`` does, plus the wrappers)."""
    handlers = {}
    for m in pb.DESCRIPTOR.services_by_name["Recommender"].methods:
        request, response = getattr(pb, m.input_type.name), getattr(pb, m.output_type.name)
        behavior = getattr(service, m.name)
        behavior = observe.wrap(m.name, auth.wrap(m.name, behavior) or behavior)
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=observe.deserializer(m.name, request.FromString),
            response_serializer=serializer(response),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)

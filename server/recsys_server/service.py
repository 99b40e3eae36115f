"""The gRPC servicer: protobuf <-> core types, nothing else. Errors are raised as
`recsys_server.errors` and mapped to status codes by `recsys_server.interceptors`."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_server import explain as ex
from recsys_server.core import Interaction, RecommenderCore
from recsys_server.router import COLD_START, PERSONALIZED, POPULARITY
from recsys_server.scoring import Answer, Query, Scored

TIER = {
    PERSONALIZED: pb.FALLBACK_TIER_PERSONALIZED,
    COLD_START: pb.FALLBACK_TIER_COLD_START,
    POPULARITY: pb.FALLBACK_TIER_POPULARITY,
}
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name


def _ts(seconds: float) -> Timestamp:
    t = Timestamp()
    whole = int(seconds // 1)
    t.seconds, t.nanos = whole, round((seconds - whole) * 1e9) % 1_000_000_000
    return t


def query_from(r: pb.RecommendRequest) -> Query:
    return Query(
        user_id=r.user_id,
        k=r.k,
        model=r.model,
        exclude_item_ids=r.exclude_item_ids,
        allow_item_ids=r.allow_item_ids,
        recent_item_ids=r.recent_item_ids,
        explain=r.explain,
    )


def explanation_pb(r: ex.Reason) -> pb.Explanation:
    fields: dict = {"text": r.text, "kind": r.kind}
    if r.items:
        fields["items"] = [
            pb.ItemContribution(
                item_id=i.item_id,
                title=i.title,
                similarity=i.similarity,
                contribution=i.contribution,
            )
            for i in r.items
        ]
    if r.similar_users is not None:
        su = r.similar_users
        fields["similar_users"] = pb.SimilarUsers(
            count=su.count,
            neighbours=su.neighbours,
            mean_similarity=su.mean_similarity,
            max_similarity=su.max_similarity,
        )
    if r.latent_factors is not None:
        lf = r.latent_factors
        fields["latent_factors"] = pb.LatentFactors(
            factors=lf.factors,
            contributions=lf.contributions,
            shares=lf.shares,
            closest_item_id=lf.closest_item_id,
            closest_item_title=lf.closest_item_title,
            closest_similarity=lf.closest_similarity,
        )
    if r.trending is not None:
        t = r.trending
        fields["trending"] = pb.Trending(
            rank=t.rank,
            half_life_days=t.half_life_days,
            window_start=_ts(t.window_start),
            window_end=_ts(t.window_end),
        )
    if r.components:
        fields["components"] = [
            pb.ComponentShare(model=c.model, share=c.share, contribution=c.contribution)
            for c in r.components
        ]
    return pb.Explanation(**fields)


def scored_pb(s: Scored) -> pb.ScoredItem:
    if s.reason is None:
        return pb.ScoredItem(
            item_id=s.item_id,
            score=s.score,
            confidence=s.confidence,
            title=s.title,
            categories=s.categories,
        )
    return pb.ScoredItem(
        item_id=s.item_id,
        score=s.score,
        confidence=s.confidence,
        title=s.title,
        categories=s.categories,
        explanation=explanation_pb(s.reason),
    )


def answer_pb(a: Answer) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        user_id=a.user_id,
        items=[scored_pb(s) for s in a.items],
        model=a.model,
        model_version=a.version,
        fallback_tier=TIER[a.tier],
        experiment=a.experiment,
        variant=a.variant,
    )


class RecommenderService(pb_grpc.RecommenderServicer):
    def __init__(self, core: RecommenderCore) -> None:
        self.core = core

    async def Recommend(self, request, context):
        return answer_pb(self.core.recommend(query_from(request)))

    async def RecommendBatch(self, request, context):
        answers = await self.core.recommend_batch([query_from(r) for r in request.requests])
        return pb.RecommendBatchResponse(responses=[answer_pb(a) for a in answers])

    async def SimilarItems(self, request, context):
        a = self.core.similar(request.item_id, request.k, request.model)
        return pb.SimilarItemsResponse(
            item_id=a.item_id,
            items=[scored_pb(s) for s in a.items],
            model=a.model,
            model_version=a.version,
        )

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


def add_to_server(service: RecommenderService, server: grpc.aio.Server) -> None:
    pb_grpc.add_RecommenderServicer_to_server(service, server)

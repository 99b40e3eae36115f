"""The server answers from ``recsys_core`` alone: it never imports the trainer (issue 12's
runtime boundary), neither when its modules load nor on any request path."""

from __future__ import annotations

import numpy as np
from srv_support import Client, ServerProcess, event, trained  # noqa: F401

from recsys_core import artifacts
from recsys_proto.v1 import recommender_pb2 as pb

BLOCK_TRAINER = """
import runpy, sys
class NoTrainer:
    def find_spec(self, name, path=None, target=None):
        if name == "recsys_trainer" or name.startswith("recsys_trainer."):
            raise ImportError(f"the server imported {name}")
sys.meta_path.insert(0, NoTrainer())
runpy.run_module("recsys_server.app", run_name="__main__", alter_sys=True)
"""


def test_a_server_that_cannot_import_the_trainer_serves_every_model(trained, tmp_path):  # noqa: F811
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    known = str(loaded.user_ids[int(np.argmax(np.diff(loaded.history.indptr)))])
    item = str(loaded.item_ids[0])
    srv = ServerProcess("--artifacts", str(trained), "--store", f"sqlite:///{tmp_path}/ev.db")
    srv.args[1:3] = ["-c", BLOCK_TRAINER]
    srv.start()
    try:
        srv.wait_serving()
        c = Client(srv.address)
        models = [m.name for m in c.ListModels(pb.ListModelsRequest()).models]
        assert set(models) == set(loaded.models)
        for model in models:
            for user in (known, "nobody-yet"):
                r = c.Recommend(pb.RecommendRequest(user_id=user, k=3, model=model, explain=True))
                assert len(r.items) == 3, (model, user)
                assert all(i.explanation.text for i in r.items), (model, user)
        ack = c.RecordInteractions(pb.RecordInteractionsRequest(events=[event("b-1", "new", item)]))
        assert ack.recorded == 1
        r = c.Recommend(pb.RecommendRequest(user_id="new", k=3, explain=True))
        assert len(r.items) == 3 and item not in [i.item_id for i in r.items]
        c.close()
    finally:
        code = srv.terminate()
    assert code == 0 and "the server imported" not in srv.stderr, srv.stderr

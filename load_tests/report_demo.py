"""An experiment report from a real server with a known truth (the example in
docs/experiments.md, "Report").

    python load_tests/report_demo.py --artifacts ARTIFACTS_ROOT [--users 1500] [--seed 7]

Starts the server in process on a free port (a fresh store in a temporary directory) with an
A/B experiment "blend": control = hybrid, svd-only = svd, half the users each. Each user asks
once for 10 items; each item is clicked with probability 0.030 under control and 0.036 under
svd-only (+20%), a fifth of the clicks are followed by a purchase, half the clicks carry their
recommendation_id and position and half not. Then prints `recsys experiments report blend`.
Needs the server tests' helpers (server/tests on the path).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server" / "tests"))

from srv_support import Client, serving

from recsys_client.cli import main as cli
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.config import Experiment, Variant

EXP = Experiment("blend", (Variant("control", "hybrid", 0.5), Variant("svd-only", "svd", 0.5)))
CTR = {"control": 0.030, "svd-only": 0.036}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--users", type=int, default=1500)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    rng = random.Random(a.seed)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(a.artifacts, Path(tmp), experiments=(EXP,)) as srv,
    ):
        c = Client(srv.address)
        events = []
        for n in range(a.users):
            user = f"sim{n}"
            r = c.Recommend(pb.RecommendRequest(user_id=user, k=10))
            for pos, item in enumerate(r.items, 1):
                if rng.random() >= CTR[r.variant]:
                    continue
                explicit = rng.random() < 0.5
                events.append(
                    pb.Interaction(
                        event_id=f"c{n}-{pos}",
                        user_id=user,
                        item_id=item.item_id,
                        event_type="click",
                        recommendation_id=r.recommendation_id if explicit else "",
                        position=pos if explicit else 0,
                    )
                )
                if rng.random() < 0.2:
                    events.append(
                        pb.Interaction(
                            event_id=f"p{n}-{pos}",
                            user_id=user,
                            item_id=item.item_id,
                            event_type="purchase",
                        )
                    )
        time.sleep(1.0)  # the impressions' writer stores them off the request path
        for i in range(0, len(events), 500):
            c.RecordInteractions(pb.RecordInteractionsRequest(events=events[i : i + 500]))
        c.close()
        cli(["--target", srv.address, "experiments", "report", "blend"])


if __name__ == "__main__":
    main()

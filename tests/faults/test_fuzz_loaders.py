"""7b. The trainer's loaders (and the old event log reader the server's import uses) against
malformed files: only their documented errors."""

from __future__ import annotations

import contextlib
import shutil

from fsupport import LONG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_core import artifacts
from recsys_core.catalog import load_catalog
from recsys_core.data import DataError, load_interactions
from recsys_server.old_log import read_events

EXAMPLES = 1000 if LONG else 80
lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [
                "u1\ti1\tview\t1.0\t1704068507",
                "user\titem\tevent\tweight\ttimestamp",
                "u1,i1,5,881250949",
                "\x00\xff",
                "u1\ti1\tview\tnan\t-1",
                '"a\tb"\t',
            ]
        ),
    ),
    max_size=8,
)
settings_ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@settings_
@given(
    body=lines,
    raw=st.binary(max_size=200),
    suffix=st.sampled_from([".tsv", ".csv", ".data", ".parquet"]),
)
def test_interaction_loader(tmp_path_factory, body, raw, suffix):
    p = tmp_path_factory.mktemp("f") / f"x{suffix}"
    p.write_bytes("\n".join(body).encode("utf-8", "surrogatepass") + raw)
    with contextlib.suppress(DataError):
        load_interactions(p)


@settings_
@given(body=lines, raw=st.binary(max_size=100))
def test_catalog_loader(tmp_path_factory, body, raw):
    p = tmp_path_factory.mktemp("c") / "catalog.tsv"
    p.write_bytes("\n".join(body).encode("utf-8", "surrogatepass") + raw)
    with contextlib.suppress(DataError, ValueError):
        load_catalog(p)


@settings_
@given(raw=st.binary(max_size=300))
def test_old_event_log_reader(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("e")
    (d / "events-000001.log").write_bytes(raw)
    list(read_events(d))  # stops at damage; never raises for it


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(
        [
            "manifest.json",
            "ids.npz",
            "item_cf.npz",
            "svd.json",
            "catalog.tsv",
            "history.npz",
            "popularity.npz",
        ]
    ),
    at=st.floats(0, 1),
    data=st.binary(min_size=1, max_size=64),
    fix=st.booleans(),
)
def test_artifact_loader(trained, tmp_path_factory, target, at, data, fix):
    v = artifacts.latest_version(trained)
    d = tmp_path_factory.mktemp("a") / v
    shutil.copytree(trained / v, d)
    p = d / target
    b = bytearray(p.read_bytes())
    i = int(at * (len(b) - 1))
    b[i : i + len(data)] = data
    p.write_bytes(bytes(b))
    if fix and target != "manifest.json":  # checksums made to match: the parsers must object
        import json

        m = json.loads((d / "manifest.json").read_text())
        sha, size = artifacts._digest(p)
        m["files"][target] = {"sha256": sha, "bytes": size}
        (d / "manifest.json").write_text(json.dumps(m))
    with contextlib.suppress(artifacts.ArtifactError):
        artifacts.load_version(d)

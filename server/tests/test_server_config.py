"""ServerConfig: TOML, environment tokens, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_server.app import build_parser
from recsys_server.config import ConfigError, ServerConfig, load

TOML = """
artifacts = "/srv/artifacts"
host = "0.0.0.0"
port = 6000
metrics_port = 6001
poll_seconds = 1
default_model = "item_cf"
max_concurrent_rpcs = 64
grace_seconds = 2.5
write_token = "from-file"

[[experiments]]
name = "blend"
[[experiments.variants]]
name = "control"
model = "hybrid"
share = 0.5
[[experiments.variants]]
name = "svd-heavy"
model = "hybrid"
share = 0.5
hybrid_weights = { svd = 2.0 }
"""


def test_defaults():
    c = ServerConfig(artifacts=Path("/a/artifacts"))
    assert (c.host, c.port, c.metrics_port) == ("127.0.0.1", 50051, 9100)
    assert (c.poll_seconds, c.default_model, c.max_concurrent_rpcs) == (2.0, "hybrid", 256)
    assert c.grace_seconds == 5 and c.experiments == ()
    # The data store beside the artifacts, as the event log was (README command 1).
    assert c.store_url == "sqlite:////a/events.db"
    assert c.import_log_dir == Path("/a/events")


def test_toml_and_env(tmp_path):
    f = tmp_path / "server.toml"
    f.write_text(TOML)
    c = load(f, env={"RECSYS_ADMIN_TOKEN": "s3cr3t-adm", "RECSYS_WRITE_TOKEN": "env-wins"})
    assert c.artifacts == Path("/srv/artifacts") and c.host == "0.0.0.0"
    assert (c.port, c.metrics_port, c.poll_seconds, c.grace_seconds) == (6000, 6001, 1.0, 2.5)
    assert c.default_model == "item_cf" and c.max_concurrent_rpcs == 64
    assert (c.write_token, c.admin_token, c.read_token) == ("env-wins", "s3cr3t-adm", None)
    (exp,) = c.experiments
    assert exp.name == "blend" and [v.name for v in exp.variants] == ["control", "svd-heavy"]
    assert exp.variants[1].hybrid_weights == {"svd": 2.0}
    assert "env-wins" not in repr(c) and "s3cr3t" not in repr(c)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('port = "x"', "port"),
        ("port = 70000", "port"),
        ('default_model = "bpr"', "default_model"),
        ("poll_seconds = 0", "poll_seconds"),
        ("explained_users = -1", "explained_users must be >= 0"),
        ('explained_users = "many"', "explained_users: expected an integer"),
        ('colour = "blue"', "unknown key"),
        ('tls_cert = "c.pem"', "tls_cert and tls_key"),
        ('write_token = " "', "write_token"),
        ("port = [", "server.toml"),
        (
            '[[experiments]]\nname = "e"\n[[experiments.variants]]\nname = "a"\n'
            'model = "svd"\nshare = 0.7\n[[experiments.variants]]\nname = "b"\n'
            'model = "svd"\nshare = 0.4\n',
            "add up to",
        ),
        (
            '[[experiments]]\nname = "e"\n[[experiments.variants]]\nname = "a"\n'
            'model = "svd"\nshare = 0.5\nhybrid_weights = { svd = 1.0 }\n',
            "hybrid_weights needs",
        ),
        (
            '[[experiments]]\nname = "e"\n[[experiments.variants]]\nname = "a"\n'
            'model = "hybrid"\nshare = 0.5\nhybrid_weights = { bpr = 1.0 }\n',
            "unknown hybrid component",
        ),
        ('[[experiments]]\nname = "e"\n', "no variants"),
        ('store = "mysql://h/db"', "unsupported scheme 'mysql'"),
        ('store = "/var/events.db"', "not a URL"),
        ('log_dir = "/srv/events"', "log_dir is no longer a setting.*import_log"),
        ("log_fsync = false", "log_fsync is no longer a setting"),
    ],
)
def test_invalid(tmp_path, text, needle):
    f = tmp_path / "server.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load(f, env={})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load(tmp_path / "nope.toml", env={})


def test_cli_flags():
    a = build_parser().parse_args(
        ["--artifacts", "/x", "--port", "1", "--metrics-port", "2", "--tls-cert", "c"]
    )
    assert (a.artifacts, a.port, a.metrics_port, a.tls_cert) == (Path("/x"), 1, 2, Path("c"))
    assert a.host is None and a.config is None  # unset flags leave the file's values alone


def test_store_settings(tmp_path):
    f = tmp_path / "server.toml"
    f.write_text(
        'artifacts = "/srv/a"\nstore = "postgresql://rec:s3cr3t@db/recsys"\nimport_log = "/old"\n'
    )
    c = load(f, env={})
    assert c.store_url == "postgresql://rec:s3cr3t@db/recsys"
    assert c.import_log_dir == Path("/old")
    assert "s3cr3t" not in repr(c) and "rec:***@db" in repr(c)
    a = build_parser().parse_args(["--store", "sqlite:///x.db", "--import-log", "/old"])
    assert (a.store, a.import_log) == ("sqlite:///x.db", Path("/old"))


def test_store_url_from_the_environment_wins_over_the_file(tmp_path):
    f = tmp_path / "server.toml"
    f.write_text('store = "sqlite:////srv/events.db"\n')
    assert load(f, env={}).store_url == "sqlite:////srv/events.db"
    dsn = "postgresql://recsys:pw@db.internal/recsys"
    c = load(f, env={"RECSYS_STORE_URL": dsn})
    assert c.store_url == dsn
    # A malformed URL from the environment is refused like one from the file.
    with pytest.raises(ConfigError, match="store"):
        load(f, env={"RECSYS_STORE_URL": "mysql://db"})

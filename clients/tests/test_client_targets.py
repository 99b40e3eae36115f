"""Client targets without a network: parsing, resolving a list once, the channel options."""

from __future__ import annotations

import json
import re
import socket

import pytest

from recsys_client import AsyncRecsysClient, RecsysClient, _core, _target


def fake_resolver(table: dict[str, list[str]]):
    """A getaddrinfo stand-in: host name → addresses; unknown names fail like getaddrinfo."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[tuple]:
        asked.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {True: socket.AF_INET6, False: socket.AF_INET}
        return [(family[":" in ip], socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    "given",
    ["127.0.0.1:50051", "localhost:50051", "recsys.default.svc:80", "[::1]:50051"],
)
def test_one_target_is_left_to_grpc(given):
    resolve = fake_resolver({})
    t = _target.parse(given, resolve)
    assert (t.display, t.uri, t.authority) == (given, given, None)
    assert resolve.asked == []  # gRPC resolves it (and again when a connection fails)


@pytest.mark.parametrize(
    "given",
    ["dns:///localhost:50051", "dns:localhost:50051", "dns://8.8.8.8:53/recsys.svc:50051"],
)
def test_dns_targets_pass_through(given):
    t = _target.parse(given, fake_resolver({}))
    assert (t.uri, t.authority) == (given, None)


@pytest.mark.parametrize("given", ["ipv4:10.0.0.1:1,10.0.0.2:2", "unix:/run/recsys.sock"])
def test_grpc_uris_pass_through(given):
    assert _target.parse(given).uri == given


def test_a_list_and_a_comma_separated_string_are_the_same():
    resolve = fake_resolver({"a": ["10.0.0.1"], "b": ["10.0.0.2"]})
    listed = _target.parse(["a:50051", "b:50052"], resolve)
    joined = _target.parse(" a:50051 , b:50052 ", resolve)
    assert listed == joined
    assert listed.uri == "ipv4:10.0.0.1:50051,10.0.0.2:50052"
    assert listed.display == "a:50051,b:50052"
    assert listed.authority == "a:50051"  # TLS checks the first name given, not an address


def test_a_name_with_several_addresses_contributes_each():
    resolve = fake_resolver({"svc": ["10.0.0.1", "10.0.0.2", "10.0.0.1"]})
    t = _target.parse(["svc:1", "10.0.0.9:2"], resolve)
    assert t.uri == "ipv4:10.0.0.1:1,10.0.0.2:1,10.0.0.9:2"


def test_ipv6_among_the_addresses_makes_the_list_ipv6():
    resolve = fake_resolver({"six": ["fd00::5"]})
    t = _target.parse("127.0.0.1:1,[::1]:2,six:3", resolve)
    assert t.uri == "ipv6:[::ffff:7f00:1]:1,[::1]:2,[fd00::5]:3"


def test_ip_literals_are_not_resolved():
    resolve = fake_resolver({})
    _target.parse("127.0.0.1:1,127.0.0.1:2", resolve)
    assert resolve.asked == []


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("", "''"),
        ("  ", "'  '"),
        ([], "[]"),
        (42, "42"),
        (["a:1", 5], "5"),
        ("localhost", "'localhost'"),
        ("localhost:", "'localhost:'"),
        (":50051", "':50051'"),
        ("localhost:0", "'localhost:0'"),
        ("localhost:65536", "'localhost:65536'"),
        ("localhost:http", "'localhost:http'"),
        ("bad host:1", "'bad host:1'"),
        ("::1:50051", "'::1:50051'"),
        ("[::1]50051", "'[::1]50051'"),
        ("[nope]:1", "'[nope]:1'"),
        ("a:1,,b:2", "entry 2 is empty"),
        ("a:1,a:1", "'a:1' is given twice"),
        ("a:1,dns:///b:2", "'dns:///b:2'"),
        ("dns:///localhost", "'localhost'"),
        ("dns:///localhost:99999", "'localhost:99999'"),
        ("a:1,missing:2", "cannot resolve 'missing'"),
        ("a:1,b:x", "'b:x'"),
    ],
)
def test_bad_targets_are_named(given, named):
    with pytest.raises(ValueError) as err:
        _target.parse(given, fake_resolver({"a": ["10.0.0.1"], "b": ["10.0.0.2"]}))
    assert named in str(err.value)


def test_channel_options_balance_round_robin():
    t = _target.parse("127.0.0.1:1,127.0.0.1:2")
    options = dict(_target.channel_options(t, [("grpc.max_receive_message_length", 5)]))
    assert json.loads(options["grpc.service_config"]) == {
        "loadBalancingConfig": [{"round_robin": {}}]
    }
    assert options["grpc.default_authority"] == "127.0.0.1:1"
    assert options["grpc.max_receive_message_length"] == 5
    one = dict(_target.channel_options(_target.parse("127.0.0.1:1"), []))
    assert "grpc.default_authority" not in one and "grpc.service_config" in one


def test_options_given_by_the_caller_win():
    t = _target.parse("127.0.0.1:1,127.0.0.1:2")
    mine = [("grpc.service_config", "{}"), ("grpc.ssl_target_name_override", "example.org")]
    options = _target.channel_options(t, mine)
    assert options == mine  # not given twice, and no authority over the caller's TLS name


@pytest.mark.parametrize("cls", [RecsysClient, AsyncRecsysClient])
def test_clients_take_several_targets(cls):
    client = cls(["127.0.0.1:1", "127.0.0.1:2"])
    assert client.target == "127.0.0.1:1,127.0.0.1:2"
    assert repr(client).endswith("('127.0.0.1:1,127.0.0.1:2')")
    settings = client._settings
    assert settings.channel_target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert ("grpc.service_config", _target.SERVICE_CONFIG) in settings.options
    with pytest.raises(ValueError, match=re.escape("'127.0.0.1:x'")):
        cls("127.0.0.1:1,127.0.0.1:x")


def test_record_interactions_is_retried_because_every_event_has_an_id():
    from recsys_client import Interaction

    call = _core.record_interactions([Interaction.create("u", "i", "click")])
    assert call.idempotent
    assert not _core.reload_models().idempotent

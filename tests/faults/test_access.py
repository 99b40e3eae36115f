"""8. Access control, TLS, default binds and a port in use, on real server processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
from fsupport import ServerProcess, report, scrape

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc

TOKENS = {
    "RECSYS_WRITE_TOKEN": "w-s3cret-token-123",
    "RECSYS_ADMIN_TOKEN": "a-s3cret-token-456",
    "RECSYS_READ_TOKEN": "r-s3cret-token-789",
}


def code(fn, req, token=None) -> str:
    meta = (("authorization", f"Bearer {token}"),) if token else None
    try:
        fn(req, timeout=10, metadata=meta)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def listening(port: int) -> set[str]:
    """Local addresses bound to ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":
                found.add(addr)
    return found


def test_tokens_tls_binds_ports(trained, tmp_path):
    srv = ServerProcess(
        "--artifacts",
        str(trained),
        "--store",
        f"sqlite:///{tmp_path}/ev.db",
        "--log-level",
        "DEBUG",
        env=TOKENS,
    ).start()
    try:
        srv.wait_serving()
        stub = pb_grpc.RecommenderStub(grpc.insecure_channel(srv.address))
        ev = pb.Interaction(event_id="a1", user_id="u001", item_id="i001", event_type="view")
        write, reload = pb.RecordInteractionsRequest(events=[ev]), pb.ReloadModelsRequest()
        read = TOKENS["RECSYS_READ_TOKEN"]
        got = {
            "write_no_token": code(stub.RecordInteractions, write),
            "admin_no_token": code(stub.ReloadModels, reload),
            "write_read_token": code(stub.RecordInteractions, write, read),
            "admin_read_token": code(stub.ReloadModels, reload, read),
            "write_write_token": code(stub.RecordInteractions, write, TOKENS["RECSYS_WRITE_TOKEN"]),
            "admin_admin_token": code(stub.ReloadModels, reload, TOKENS["RECSYS_ADMIN_TOKEN"]),
            "read_read_token": code(stub.ListModels, pb.ListModelsRequest(), read),
        }
        text = scrape(srv.metrics_url)
        grpc_port = int(srv.address.rsplit(":", 1)[1])
        metrics_port = int(srv.metrics_url.split(":")[2].split("/")[0])
        binds = sorted(listening(grpc_port) | listening(metrics_port))
        # A second server on the same port.
        second = subprocess.run(
            [
                srv.args[0],
                "-m",
                "recsys_server.app",
                "--artifacts",
                str(trained),
                "--port",
                str(grpc_port),
                "--metrics-port",
                "0",
                "--store",
                f"sqlite:///{tmp_path}/e2.db",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        srv.terminate()
    logs = srv.stderr
    leaked = [t for t in TOKENS.values() if t in logs or t in text]
    figures = {
        **got,
        "token_in_logs_or_metrics": leaked,
        "binds": binds,
        "second_server_exit": second.returncode,
        "second_server_message": second.stderr.strip().splitlines()[-1],
    }
    # TLS: a plaintext client cannot talk to a TLS port.
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = ServerProcess(
        "--artifacts",
        str(trained),
        "--store",
        f"sqlite:///{tmp_path}/e3.db",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ).start()
    try:
        plain = pb_grpc.RecommenderStub(grpc.insecure_channel(tls.address))
        figures["plaintext_on_tls"] = code(plain.ListModels, pb.ListModelsRequest())
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        port = tls.address.rsplit(":", 1)[1]
        secure = grpc.secure_channel(
            f"localhost:{port}", creds, options=[("grpc.ssl_target_name_override", "localhost")]
        )
        for _ in range(300):  # until the first version is loaded
            figures["tls_client"] = code(
                pb_grpc.RecommenderStub(secure).Recommend, pb.RecommendRequest(user_id="u001", k=3)
            )
            if figures["tls_client"] != "UNAVAILABLE":
                break
            time.sleep(0.1)
    finally:
        tls.kill()
    report("access", figures)
    assert got["write_no_token"] == got["admin_no_token"] == "UNAUTHENTICATED", figures
    assert got["write_read_token"] == got["admin_read_token"] == "PERMISSION_DENIED", figures
    assert got["write_write_token"] == got["admin_admin_token"] == "OK", figures
    assert got["read_read_token"] == "OK", figures
    assert not leaked, figures
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    assert binds and set(binds) <= loopback, figures  # 127.0.0.1 (or ::1, v4-mapped) only
    assert second.returncode == 1 and "already in use" in second.stderr, figures
    assert figures["plaintext_on_tls"] == "UNAVAILABLE", figures
    assert figures["tls_client"] == "OK", figures

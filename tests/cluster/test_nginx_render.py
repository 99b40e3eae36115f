"""deploy/nginx/render.sh: one upstream `server` line per replica, the other variables as
envsubst would put them, and a configuration Debian's nginx accepts (`nginx -t`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "deploy" / "nginx" / "render.sh"
TEMPLATE = ROOT / "deploy" / "nginx" / "recsys-grpc.conf.template"


def render(upstream: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RECSYS_LISTEN": "127.0.0.1:50050",
        "RECSYS_MAX_INFLIGHT": "32",
        "RECSYS_UPSTREAM": upstream,
        **extra,
    }
    return subprocess.run(["bash", str(RENDER)], env=env, capture_output=True, text=True)


def servers(conf: str) -> list[str]:
    return re.findall(r"^\s*server (\S+) max_fails=1 fail_timeout=2s;$", conf, re.M)


def test_one_line_per_replica_in_order():
    out = render("127.0.0.1:50061, 127.0.0.1:50062 127.0.0.1:50063")
    assert out.returncode == 0, out.stderr
    assert servers(out.stdout) == ["127.0.0.1:50061", "127.0.0.1:50062", "127.0.0.1:50063"]
    assert "listen 127.0.0.1:50050 http2;" in out.stdout
    assert "limit_conn recsys_inflight 32;" in out.stdout
    # Only the comments still name the variables.
    body = "\n".join(x for x in out.stdout.splitlines() if not x.lstrip().startswith("#"))
    assert "${" not in body


def test_one_address_renders_as_envsubst_does():
    out = render("127.0.0.1:50061")
    text = TEMPLATE.read_text()
    for var, value in (
        ("RECSYS_LISTEN", "127.0.0.1:50050"),
        ("RECSYS_UPSTREAM", "127.0.0.1:50061"),
        ("RECSYS_MAX_INFLIGHT", "32"),
    ):
        text = text.replace("${" + var + "}", value)
    assert out.stdout == text


def test_no_address_is_refused():
    out = render(" , ")
    assert out.returncode == 2
    assert "RECSYS_UPSTREAM holds no address" in out.stderr


def test_nginx_accepts_the_rendered_config(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing: run .ci/system-deps (Debian's nginx-light)")
    out = render("127.0.0.1:50061 127.0.0.1:50062")
    (tmp_path / "recsys-grpc.conf").write_text(out.stdout)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ client_body_temp_path {tmp_path}/body; include {tmp_path}/recsys-grpc.conf; }}\n"
    )
    check = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr

"""``recsys-dashboard``: starts the Streamlit app against a running server.

    recsys-dashboard                         # server 127.0.0.1:50051, files under ./var
    recsys-dashboard --target HOST:PORT --metrics-url http://HOST:9100/metrics \\
        --artifacts var/artifacts --port 8501

The settings reach the app as environment variables (:mod:`.settings`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recsys_dashboard.settings import Settings
from recsys_dashboard.style import theme_flags

APP = Path(__file__).with_name("app.py")


def build_parser() -> argparse.ArgumentParser:
    d = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="recsys-dashboard", description="Dashboard of a running recsys-engine server."
    )
    p.add_argument("--target", default=d.target, help="gRPC server HOST:PORT (%(default)s)")
    p.add_argument("--metrics-url", default=d.metrics_url, help="Prometheus URL (%(default)s)")
    p.add_argument(
        "--artifacts", default=d.artifacts, type=Path, help="trainer artifacts (%(default)s)"
    )
    p.add_argument("--report", default=d.report, type=Path, help="recsys-train evaluate report")
    p.add_argument("--token", default=d.token, help="bearer token ($RECSYS_TOKEN)")
    p.add_argument("--tls-root-cert", default=d.tls_root_cert, metavar="PEM")
    p.add_argument("--timeout", type=float, default=d.timeout, help="per call (%(default)s s)")
    p.add_argument("--host", default="127.0.0.1", help="address the web UI binds (%(default)s)")
    p.add_argument("--port", type=int, default=8501, help="web UI port (%(default)s)")
    return p


def streamlit_args(a: argparse.Namespace) -> list[str]:
    return [
        "run",
        str(APP),
        f"--server.address={a.host}",
        f"--server.port={a.port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--client.showErrorDetails=none",
        "--client.toolbarMode=minimal",
        *theme_flags(),
    ]


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    def absolute(p: Path | None) -> Path | None:
        return p.expanduser().resolve() if p is not None else None

    settings = Settings(
        target=a.target,
        metrics_url=a.metrics_url,
        artifacts=absolute(a.artifacts),
        report=absolute(a.report),
        token=a.token,
        tls_root_cert=a.tls_root_cert,
        timeout=a.timeout,
    )
    os.environ.update(settings.to_env())
    print(f"recsys-dashboard: http://{a.host}:{a.port}  (server {a.target})", flush=True)
    try:
        from streamlit.web import cli as stcli
    except ImportError:
        print(
            "recsys-dashboard: error: Streamlit is not installed; "
            "pip install './clients[dashboard]'",
            file=sys.stderr,
        )
        return 2

    sys.argv = ["streamlit", *streamlit_args(a)]
    return stcli.main(prog_name="streamlit")


if __name__ == "__main__":
    raise SystemExit(main())

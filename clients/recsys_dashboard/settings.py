"""Where the dashboard finds the server and the trainer's files: environment variables, set by
``recsys-dashboard`` from its flags (or by hand when running ``streamlit run`` directly)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_METRICS_URL = "http://127.0.0.1:9100/metrics"
DEFAULT_ARTIFACTS = "var/artifacts"

# Environment variable for each setting (RECSYS_TARGET and RECSYS_TOKEN are the `recsys` CLI's).
ENV = {
    "target": "RECSYS_TARGET",
    "token": "RECSYS_TOKEN",
    "tls_root_cert": "RECSYS_TLS_ROOT_CERT",
    "metrics_url": "RECSYS_METRICS_URL",
    "artifacts": "RECSYS_ARTIFACTS",
    "report": "RECSYS_REPORT",
    "timeout": "RECSYS_DASHBOARD_TIMEOUT",
}


@dataclass(frozen=True)
class Settings:
    target: str = DEFAULT_TARGET
    metrics_url: str = DEFAULT_METRICS_URL
    artifacts: Path | None = None
    """The trainer's artifacts root (catalog, user ids, training histories, manifest)."""
    report: Path | None = None
    """A ``recsys-train evaluate`` report directory (report.json), optional."""
    token: str | None = None
    tls_root_cert: str | None = None
    timeout: float = 3.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(ENV[name]) or None

        def path(name: str, default: str | None = None) -> Path | None:
            value = get(name) or default
            return Path(value).expanduser() if value else None

        return cls(
            target=get("target") or DEFAULT_TARGET,
            metrics_url=get("metrics_url") or DEFAULT_METRICS_URL,
            artifacts=path("artifacts", DEFAULT_ARTIFACTS),
            report=path("report"),
            token=get("token"),
            tls_root_cert=get("tls_root_cert"),
            timeout=float(get("timeout") or 3.0),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes :meth:`from_env` return these settings."""
        out = {ENV["target"]: self.target, ENV["metrics_url"]: self.metrics_url}
        out[ENV["timeout"]] = str(self.timeout)
        for name in ("artifacts", "report", "token", "tls_root_cert"):
            value = getattr(self, name)
            if value is not None:
                out[ENV[name]] = str(value)
        return out

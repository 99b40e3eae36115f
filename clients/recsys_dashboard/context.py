"""What every page needs: settings, the SDK client, and the trainer's artifacts (cached)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from recsys_client import Backoff, RecsysClient
from recsys_dashboard import artifacts
from recsys_dashboard.settings import Settings

# Reconnect quickly after the server comes back (grpc's default backoff grows to 2 minutes).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def settings() -> Settings:
    return Settings.from_env()


@st.cache_resource(show_spinner=False)
def _client(target: str, token: str | None, cert: str | None, timeout: float) -> RecsysClient:
    return RecsysClient(
        target,
        token=token,
        tls_root_cert=cert,
        timeout=timeout,
        retries=1,
        backoff=Backoff(initial=0.1, maximum=0.2),
        options=CHANNEL_OPTIONS,
    )


def client() -> RecsysClient:
    s = settings()
    return _client(s.target, s.token, s.tls_root_cert, s.timeout)


@st.cache_resource(show_spinner=False, max_entries=4)
def _artifacts(root: str, version: str | None) -> artifacts.Artifacts:
    return artifacts.load(Path(root), version)


def load_artifacts(version: str | None = None) -> artifacts.Artifacts | None:
    """The artifacts of ``version`` (else the latest), or None when there are none; the
    reason is in ``st.session_state["artifacts_error"]``."""
    root = settings().artifacts
    if root is None:
        st.session_state["artifacts_error"] = "no artifacts directory configured"
        return None
    try:
        found = _artifacts(str(root.resolve()), version)
    except artifacts.ArtifactsMissing as e:
        st.session_state["artifacts_error"] = str(e)
        return None
    st.session_state.pop("artifacts_error", None)
    return found

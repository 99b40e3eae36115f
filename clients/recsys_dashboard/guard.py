"""Failures as messages a person can act on; never a traceback on the page."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from recsys_client import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RecsysError,
    Unauthenticated,
    Unavailable,
)
from recsys_dashboard.context import settings
from recsys_dashboard.ui import esc, show

log = logging.getLogger("recsys_dashboard")


def describe(err: BaseException) -> tuple[str, str]:
    """(headline, hint) for an error."""
    target = settings().target
    if isinstance(err, Unavailable):
        if "no model" in err.details.lower():
            return (
                f"The recsys server at {target} is up but has no model loaded yet.",
                "It loads the newest version from its artifacts directory; train one with "
                "`recsys-train train` or wait for the load to finish.",
            )
        return (
            f"Cannot reach the recsys server at {target}.",
            "Start it with `bash .ci/up` (or `recsys-serve --artifacts DIR`), or point the "
            "dashboard at it: `recsys-dashboard --target HOST:PORT`.",
        )
    if isinstance(err, DeadlineExceeded):
        return (f"The recsys server at {target} did not answer in time.", "Try again.")
    if isinstance(err, Unauthenticated | PermissionDenied):
        return (
            f"The recsys server at {target} refused the dashboard's token.",
            "Pass a token with `recsys-dashboard --token ...` (or $RECSYS_TOKEN); recording "
            "events needs the write token.",
        )
    if isinstance(err, NotFound):
        return ("Not found on the server.", "")
    if isinstance(err, InvalidArgument):
        return ("The server rejected the request.", "")
    if isinstance(err, RecsysError):
        return (f"The recsys server at {target} failed the call.", "")
    return ("The dashboard hit an unexpected problem.", "The details are in its log.")


def show_error(err: BaseException) -> None:
    headline, hint = describe(err)
    detail = err.details if isinstance(err, RecsysError) else f"{type(err).__name__}: {err}"
    code = f"{err.code.name}: " if isinstance(err, RecsysError) else ""
    st.error(f"**{headline}**" + (f"\n\n{hint}" if hint else ""), icon=":material/error:")
    if detail:
        show(f'<div class="rs-kpi-sub">{esc(code + detail)}</div>')


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Shows an exception as a message and ends the block there (Streamlit's own control-flow
    exceptions, e.g. st.rerun, are BaseExceptions and pass through)."""
    try:
        yield
    except Exception as err:
        if not isinstance(err, RecsysError):
            log.exception("dashboard error")
        show_error(err)

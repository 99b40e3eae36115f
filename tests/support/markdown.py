"""Rewriting one section of a Markdown report (docs/benchmarks.md), for the benchmark scripts.

A script imports it with the repository root on ``sys.path``::

    sys.path.insert(0, str(REPO))
    from tests.support.markdown import replace_section
"""

from __future__ import annotations

from collections.abc import Sequence


def replace_section(text: str, section: str, lines: Sequence[str]) -> str:
    """``text`` with the section headed ``section`` replaced by ``lines`` (appended when
    absent); the next ``## `` heading and what follows are kept."""
    body = "\n".join(lines) + "\n"
    if section in text:
        head, rest = text.split(section, 1)
        nxt = rest.find("\n## ")
        return head + body + (rest[nxt:] if nxt >= 0 else "")
    return text.rstrip("\n") + "\n\n" + body

"""Marked sections of a generated document (docs/quality.md): each bench that owns a part
of the document writes it between ``<!-- name:begin ... -->`` and ``<!-- name:end -->``,
so a bench replaces only its own part and quality.py, which rewrites the rest, keeps them."""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- (\w+):begin.*?<!-- \1:end -->", re.S)


def markers(name: str, source: str) -> tuple[str, str]:
    return f"<!-- {name}:begin ({source}) -->", f"<!-- {name}:end -->"


def splice(text: str, name: str, section: str) -> str:
    """``text`` with the section ``name`` replaced by ``section`` (appended when absent)."""
    for m in _SECTION.finditer(text):
        if m.group(1) == name:
            return text[: m.start()] + section.strip("\n") + text[m.end() :]
    return (text.rstrip("\n") + "\n\n" if text else "") + section.strip("\n") + "\n"


def write(doc: Path, name: str, section: str) -> None:
    doc.write_text(splice(doc.read_text() if doc.exists() else "", name, section))


def kept(text: str) -> list[str]:
    """Every marked section of ``text``, in order."""
    return [m.group(0) for m in _SECTION.finditer(text)]

"""The structured part of an explanation as one short line of evidence (escaped HTML)."""

from __future__ import annotations

import html

from recsys_client import Explanation


def _e(value: object) -> str:
    return html.escape(str(value)).replace("$", "&#36;")


def evidence(expl: Explanation | None) -> str:
    """The numbers behind the text, e.g. "from Heat (sim 0.52, adds 0.31) · Casino (0.40,
    0.12)" or "3 of 10 neighbours · mean sim 0.50, max 0.75"; "" when there is no structure."""
    if expl is None:
        return ""
    parts: list[str] = []
    if expl.items:
        # The first item names its numbers; the rest follow the same order.
        shown = [
            f"{_e(i.title or i.item_id)} ({'sim ' * (n == 0)}{i.similarity:.2f}"
            f"{', adds ' if n == 0 else ', '}{i.contribution:.2f})"
            for n, i in enumerate(expl.items[:3])
        ]
        parts.append("from " + " · ".join(shown))
    if expl.similar_users is not None:
        s = expl.similar_users
        parts.append(
            f"{s.count} of {s.neighbours} neighbours · mean sim {s.mean_similarity:.2f}, "
            f"max {s.max_similarity:.2f}"
        )
    if expl.latent_factors is not None:
        f = expl.latent_factors
        top = ", ".join(
            f"#{k} {share:.0%}" for k, share in zip(f.factors[:3], f.shares[:3], strict=False)
        )
        closest = f.closest_item_title or f.closest_item_id
        parts.append(
            f"factors {top}"
            + (f" · closest {_e(closest)} ({f.closest_similarity:.2f})" if closest else "")
        )
    if expl.trending is not None:
        t = expl.trending
        window = (
            f", window {t.window_start:%Y-%m-%d} to {t.window_end:%Y-%m-%d}"
            if t.window_start and t.window_end
            else ""
        )
        parts.append(f"#{t.rank} by decayed popularity (half-life {t.half_life_days:g} d{window})")
    if expl.content is not None and expl.content.categories:
        liked = ", ".join(_e(c) for c in expl.content.categories)
        held = " · ".join(_e(i.title or i.item_id) for i in expl.content.items[:3])
        parts.append(f"your categories {liked}" + (f" (as in {held})" if held else ""))
    if expl.new_item:
        parts.append("new item: no interactions yet")
    if expl.components:
        parts.append(
            " · ".join(
                f"{_e(c.model)} {c.share:.0%} (adds {c.contribution:.2f})" for c in expl.components
            )
        )
    return " | ".join(parts)

"""Team-draft interleaving (Radlinski, Kurup and Joachims 2008) and the credit of clicks.

Two rankers' lists are merged like picking sides for a game: in each round the team with fewer
picks chooses first (a coin flip breaks a tie), and a team's pick is its highest-ranked item not
yet placed. A click then counts for the team that placed the clicked item, so a user's clicks
compare the two rankers on the same list, free of between-user variance.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

A, B = 0, 1


def team_draft(
    a: Sequence[str], b: Sequence[str], k: int, rng: random.Random
) -> tuple[list[str], list[int]]:
    """Up to ``k`` distinct items and, per item, the team (``A`` or ``B``) that placed it.

    Stops at ``k`` items or when both lists are exhausted; once one list has no unplaced item
    left, its turns pass to the other. Deterministic given ``rng`` (one draw per tied round in
    which both lists still have items).
    """
    items: list[str] = []
    teams: list[int] = []
    placed: set[str] = set()
    lists = (a, b)
    nexts = [0, 0]  # per team, the index of its first item not yet seen placed
    picks = [0, 0]
    while len(items) < k:
        for t in (A, B):
            while nexts[t] < len(lists[t]) and lists[t][nexts[t]] in placed:
                nexts[t] += 1
        left = [nexts[A] < len(a), nexts[B] < len(b)]
        if not left[A] and not left[B]:
            break
        if not left[A]:
            team = B
        elif not left[B]:
            team = A
        elif picks[A] != picks[B]:
            team = A if picks[A] < picks[B] else B
        else:
            team = A if rng.random() < 0.5 else B
        item = lists[team][nexts[team]]
        items.append(item)
        teams.append(team)
        placed.add(item)
        picks[team] += 1
    return items, teams


def credit(teams: Sequence[int], clicked_positions: Iterable[int]) -> tuple[int, int]:
    """Clicks credited to A and to B.

    Positions are 1-based; a position outside the list is ignored, and a position clicked more
    than once counts once (a repeated click on one item is not more preference).
    """
    wins = [0, 0]
    for p in set(clicked_positions):
        if 1 <= p <= len(teams):
            wins[teams[p - 1]] += 1
    return wins[A], wins[B]

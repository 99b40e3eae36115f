"""Team-draft interleaving (`recsys_server.experiments.interleave`): exact merges traced by hand,
distinctness, team balance and the credit of clicks."""

from __future__ import annotations

import random

import pytest

from recsys_server.experiments.interleave import A, B, credit, team_draft


class Coins:
    """An rng whose random() returns scripted values, so a merge can be traced by hand."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.used = 0

    def random(self) -> float:
        self.used += 1
        return self.values.pop(0)


def test_traced_by_hand() -> None:
    # Tie: coin 0.9 -> B first picks b; A (fewer) picks a; tie: coin 0.1 -> A picks c (b placed);
    # B picks d; tie: coin 0.7 -> B picks f; A picks e.
    coins = Coins(0.9, 0.1, 0.7)
    items, teams = team_draft(list("abcdef"), list("bdfhij"), 6, coins)
    assert items == ["b", "a", "c", "d", "f", "e"]
    assert teams == [B, A, A, B, B, A]
    assert coins.used == 3


def test_seeded_outputs_are_exact() -> None:
    # Random(0).random(): 0.844, 0.758, 0.421 -> B, A, B, A, A, B.
    assert team_draft(list("abcdef"), list("bdfhij"), 6, random.Random(0)) == (
        ["b", "a", "d", "c", "e", "f"],
        [B, A, B, A, A, B],
    )
    assert team_draft(list("abcdef"), list("bdfhij"), 6, random.Random(1)) == (
        ["a", "b", "d", "c", "f", "e"],
        [A, B, B, A, B, A],
    )
    # Same seed, same merge: deterministic given the rng.
    first = team_draft(list("abcdef"), list("bdfhij"), 6, random.Random(7))
    assert first == team_draft(list("abcdef"), list("bdfhij"), 6, random.Random(7))


def test_exhausted_team_passes_its_turns() -> None:
    # A runs out after 3 items; B fills the rest.
    items, teams = team_draft(list("abc"), list("xyzuvw"), 8, random.Random(3))
    assert items == ["a", "x", "y", "b", "c", "z", "u", "v"]
    assert teams == [A, B, B, A, A, B, B, B]
    # Both lists exhausted before k: stop with every distinct item once.
    items, teams = team_draft(["a", "b"], ["b", "c"], 10, random.Random(0))
    assert sorted(items) == ["a", "b", "c"]
    assert len(teams) == 3
    # No draw is needed when one side is empty.
    coins = Coins()
    assert team_draft([], ["x", "y"], 5, coins) == (["x", "y"], [B, B])
    assert coins.used == 0
    assert team_draft(["a"], ["b"], 0, random.Random(0)) == ([], [])


@pytest.mark.parametrize("seed", range(40))
def test_distinct_balanced_and_from_the_teams_list(seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"i{j}" for j in range(30)]
    a = rng.sample(pool, 12)
    b = rng.sample(pool, 12)
    k = rng.randint(1, 20)
    items, teams = team_draft(a, b, k, random.Random(seed))
    assert len(items) == len(set(items)) == len(teams) == min(k, len(set(a) | set(b)))
    for item, team in zip(items, teams, strict=True):
        assert item in (a if team == A else b)
    # While both lists still had an unplaced item, the teams never differ by more than one.
    for n in range(1, len(items) + 1):
        placed = set(items[:n])
        if set(a) - placed and set(b) - placed:
            assert abs(teams[:n].count(A) - teams[:n].count(B)) <= 1
    # Each pick is the team's highest-ranked item not yet placed.
    for n, (item, team) in enumerate(zip(items, teams, strict=True)):
        own = a if team == A else b
        assert item == next(x for x in own if x not in set(items[:n]))


def test_first_pick_is_a_fair_coin() -> None:
    firsts = [team_draft(["a"], ["b"], 2, random.Random(s))[1][0] for s in range(2000)]
    assert 900 < firsts.count(A) < 1100


def test_credit() -> None:
    teams = [A, B, B, A]
    assert credit(teams, [1, 2, 3]) == (1, 2)
    assert credit(teams, []) == (0, 0)
    # Out of range ignored (0, 5, negative); a repeated position counts once.
    assert credit(teams, [0, 5, -1, 4, 4]) == (1, 0)
    assert credit([], [1]) == (0, 0)

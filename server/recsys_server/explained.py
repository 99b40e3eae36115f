"""Explanations already made for a known user's history, kept serialised.

A hybrid reason depends only on the user's history row (and the version), never on the other
items of the list, so a user asking again with the same history (no new event: the same row
object, as for `rankings.RankingCache`) gets the bytes of the explanations made before and
pays neither the evidence nor the protobuf filling again. New items are explained on their
own and fill in the rest. Bounded: the least recently used users go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

EXPLAINED_USERS = 10_000
"""Users whose explanations are kept per version: about 5 KB each for a 10-item list (default
synthetic data), so at most about 60 MB with the dictionaries."""


class Explained:
    def __init__(self, max_users: int = EXPLAINED_USERS) -> None:
        self.max_users = max_users
        # (route model id, user) -> (row it was made for, {item index: Explanation bytes})
        self._kept: OrderedDict[tuple[int, int], tuple[object, dict[int, bytes]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, route: int, user: int, row) -> dict[int, bytes]:
        """The kept explanations of ``user`` on ``route`` for this very ``row`` (empty when
        none, or when they were made for another history)."""
        with self._lock:
            got = self._kept.get((route, user))
            if got is None or got[0] is not row:
                return {}
            self._kept.move_to_end((route, user))
            return got[1]

    def put(self, route: int, user: int, row, made: dict[int, bytes]) -> None:
        if self.max_users <= 0 or not made:
            return
        key = (route, user)
        with self._lock:
            got = self._kept.get(key)
            if got is not None and got[0] is row:
                got[1].update(made)
            else:
                self._kept[key] = (row, dict(made))
            self._kept.move_to_end(key)
            while len(self._kept) > self.max_users:
                self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)

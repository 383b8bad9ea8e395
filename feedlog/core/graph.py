"""Which feeds a node replicates (spec/replication.md §4), computed from contact messages.

The node's own feed, the feeds it follows, and their follows up to ``hops`` (default 2: I follow
you, you follow them), minus every feed the node itself blocks. Only each author's latest contact
message per target counts (an unfollow after a follow cancels it). A blocked feed is neither sent
to nor taken from anyone, whoever else follows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from feedlog.core.ids import FeedId


@dataclass(frozen=True, slots=True)
class Contact:
    author: FeedId
    target: FeedId
    kind: str  # the latest of follow / unfollow / block / unblock


@dataclass(frozen=True, slots=True)
class Replication:
    wanted: frozenset[FeedId]
    blocked: frozenset[FeedId]
    hops: dict[FeedId, int]


def replication_set(me: FeedId, contacts: Iterable[Contact], hops: int = 2) -> Replication:
    follows: dict[FeedId, set[FeedId]] = {}
    blocked: set[FeedId] = set()
    for c in contacts:
        if c.kind == "follow":
            follows.setdefault(c.author, set()).add(c.target)
        elif c.kind == "block" and c.author == me:
            blocked.add(c.target)
    distance: dict[FeedId, int] = {me: 0}
    frontier = [me]
    for d in range(1, max(hops, 0) + 1):
        nxt: list[FeedId] = []
        for f in frontier:
            for t in sorted(follows.get(f, ())):
                if t not in distance and t not in blocked:
                    distance[t] = d
                    nxt.append(t)
        frontier = nxt
    blocked.discard(me)
    return Replication(frozenset(distance), frozenset(blocked), distance)

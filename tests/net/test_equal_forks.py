"""Forks of equal length (spec/replication.md §8.1 head prefixes) between real nodes over real
sockets on 127.0.0.1: two homes of one key publish the same number of messages; a third node
that syncs with both finds the fork, and the proof reaches both homes."""

from __future__ import annotations

from pathlib import Path

from feedlog.core import content
from feedlog.core.ids import FeedId
from feedlog.core.message import FeedState, Message, create
from feedlog.net.replicator import Replicator, SyncResult
from feedlog.node import Node
from tests.conftest import keypair
from tests.net.test_sync import serve


def history(label: str, n: int, after: list[Message] | None = None) -> list[Message]:
    """``n`` messages of the shared key "twin", continuing ``after``."""
    k = keypair("twin")
    out = list(after or [])
    for i in range(n):
        st = out[-1].state if out else FeedState(FeedId(k.public))
        out.append(create(k, st, content.post(f"{label} {i}"), 1_700_000_000_000 + i))
    return out


async def holder(path: Path, msgs: list[Message]) -> Node:
    node = await Node.init(path)
    await node.follow(msgs[0].author)
    assert (await node.ingestor().ingest([m.raw for m in msgs])).added == len(msgs)
    return node


async def sync(node: Node, peer: Node) -> SyncResult:
    srv = await serve(peer)
    try:
        res = await Replicator(node).connect(srv.address)
    finally:
        srv.server.close()
        srv.rep.close()
    assert res.error is None and res.caught_up, res
    return res


async def test_equal_length_fork_is_found_by_a_third_node_and_spreads(tmp_path: Path) -> None:
    shared = history("shared", 2)
    a_msgs = history("laptop", 3, shared)
    b_msgs = history("desktop", 3, shared)  # 5 messages each, different from seq 3 on
    twin = a_msgs[0].author
    a = await holder(tmp_path / "a", a_msgs)
    b = await holder(tmp_path / "b", b_msgs)
    c = await Node.init(tmp_path / "c")
    await c.follow(twin)
    first = await sync(c, a)
    assert first.added == 5 and first.forks == 0
    found = await sync(c, b)
    # same seq (5) on both sides, different heads: each side sent its message 5, nothing else
    assert (found.incoming, found.outgoing, found.received, found.sent) == (1, 1, 1, 1)
    assert found.added == 0 and found.forks == 1
    info = await c.feed_info(twin)
    assert info is not None and info.forked_seq == 5
    # b checked c's message 5 against its own and holds the proof too
    b_info = await b.feed_info(twin)
    assert b_info is not None and b_info.forked_seq == 5
    # the next sync with a carries the proof to a; no message moves
    spread = await sync(c, a)
    assert spread.received == spread.sent == 0
    a_info = await a.feed_info(twin)
    assert a_info is not None and a_info.forked_seq == 5
    proofs = [await n.store.fork_proofs(twin) for n in (a, b, c)]
    assert proofs[0] == proofs[1] == proofs[2] and len(proofs[0]) == 1
    # from now on nothing moves for the frozen feed, and nothing is asked for
    again = await sync(c, b)
    assert (again.incoming, again.outgoing, again.received, again.sent, again.forks) \
        == (0, 0, 0, 0, 0)
    for n in (a, b, c):
        assert (await n.verify()).ok
        await n.close()


async def test_same_history_at_the_same_seq_moves_nothing(tmp_path: Path) -> None:
    msgs = history("one history", 4)
    a = await holder(tmp_path / "a", msgs)
    c = await holder(tmp_path / "c", msgs)
    res = await sync(c, a)
    assert (res.incoming, res.outgoing, res.received, res.sent, res.forks) == (0, 0, 0, 0, 0)
    assert (await c.feed_info(msgs[0].author)).forked_seq is None  # type: ignore[union-attr]
    for n in (a, c):
        await n.close()


async def test_a_fork_after_an_earlier_sync_is_found_at_the_next_one(tmp_path: Path) -> None:
    """c and b synced while they held the same history; each then grows by one message of a
    different history (c from a), so they meet again at the same seq with different heads."""
    shared = history("shared", 2)
    a = await holder(tmp_path / "a", history("laptop", 1, shared))
    b = await holder(tmp_path / "b", shared)
    c = await holder(tmp_path / "c", shared)
    await sync(c, b)  # baselines now name seq 2 with the shared head on both sides
    other = history("desktop", 1, shared)[-1]
    assert (await b.ingestor().ingest([other.raw])).added == 1
    await sync(c, a)  # c now holds a's seq 3, b holds its own seq 3
    found = await sync(c, b)
    assert found.forks == 1 and found.received == 1
    for n in (a, b, c):
        info = await n.feed_info(shared[0].author)
        assert info is not None and (info.forked_seq == 3) == (n is not a), n
        await n.close()

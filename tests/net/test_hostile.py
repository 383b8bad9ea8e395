"""Hostile peers (issue 3 item 7): each one is a real TCP peer on 127.0.0.1 that speaks the real
handshake and box-stream, then misbehaves with hand-made frames or raw bytes. For each, the node
ends that connection with a code, stores only valid messages, and a good peer syncing with the
same node at the same time still completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass

import pytest

from feedlog.core.crypto import Keypair
from feedlog.core.errors import FeedlogError, HandshakeError
from feedlog.core.ids import FeedId, feed_id_text
from feedlog.core.message import FeedState, Message, create
from feedlog.core.wire import (
    MODE_FULL,
    VERSION,
    Done,
    Entry,
    Error,
    Frame,
    Hello,
    Msgs,
    Notes,
    Ping,
    Synced,
    encode_frame,
    make_note,
    msgs_frames,
)
from feedlog.net.replicator import NetConfig, Replicator, SyncResult
from feedlog.net.transport import DEFAULT_NETWORK_KEY, Address, Channel, client_channel
from feedlog.node import Node

GOOD_MESSAGES = 40


def config() -> NetConfig:
    return NetConfig(handshake_timeout=2.0, stall_timeout=3.0, idle_timeout=5.0,
                     ping_interval=2.0, connect_timeout=2.0)


def chain(keys: Keypair, n: int, state: FeedState | None = None, tag: str = "m",
          pad: int = 0) -> list[Message]:
    """``n`` validly signed messages of ``keys``' feed after ``state``."""
    state = state or FeedState(FeedId(keys.public))
    out = []
    for i in range(n):
        text = f"{tag}{i}" + "x" * pad
        m = create(keys, state, {"type": "post", "text": text}, 1_700_000_000_000 + i)
        out.append(m)
        state = m.state
    return out


@dataclass
class World:
    node: Node
    rep: Replicator
    address: Address
    hostile: Keypair

    @property
    def hid(self) -> FeedId:
        return FeedId(self.hostile.public)

    async def stored(self, feed: FeedId) -> list[bytes]:
        return [m.raw for m in await self.node.feed(feed)]

    async def finished(self, peer: FeedId | None = None, limit: float = 10.0) -> SyncResult:
        """The result of the (first) finished connection of ``peer`` (default: the hostile)."""
        want = feed_id_text(peer or self.hid)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            for r in self.rep.finished:
                if r.peer == want:
                    return r
            assert loop.time() - t0 < limit, f"no finished connection of {want}"
            await asyncio.sleep(0.01)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    node = Node.in_memory()
    hostile = Keypair.from_seed(os.urandom(32))
    await node.follow(FeedId(hostile.public))
    await node.publish_many([f"n{i}" for i in range(GOOD_MESSAGES - 1)])
    rep = Replicator(node, config())
    server = await rep.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield World(node, rep, Address("127.0.0.1", port, node.id), hostile)
    server.close()
    rep.close()
    await node.close()


async def good_peer(w: World) -> None:
    """A well-behaved peer that pulls the node's feed; it must complete."""
    g = Node.in_memory()
    await g.follow(w.node.id)
    res = await Replicator(g, config()).connect(w.address)
    assert res.error is None and res.caught_up, res
    info, want = await g.feed_info(w.node.id), await w.node.feed_info(w.node.id)
    assert info is not None and want is not None and info.seq == want.seq >= GOOD_MESSAGES
    await g.close()


async def connect(w: World, keys: Keypair | None = None,
                  network_key: bytes = DEFAULT_NETWORK_KEY) -> Channel:
    reader, writer = await asyncio.open_connection(w.address.host, w.address.port)
    return await client_channel(reader, writer, network_key=network_key,
                                keys=keys or w.hostile, server=w.address.feed, timeout=5)


async def opening(ch: Channel, w: World, seq: int) -> None:
    """HELLO and a complete vector claiming the hostile feed up to ``seq``."""
    await ch.send(Hello(VERSION, b"", False),
                  Notes(MODE_FULL, True, (Entry(w.hid, make_note(seq, False)),)))


async def drain(ch: Channel) -> tuple[list[Frame], str | None]:
    """Everything the node sends until it hangs up, and the code of how the stream ended."""
    frames: list[Frame] = []
    while True:
        try:
            got = await asyncio.wait_for(ch.receive(), 10)
        except FeedlogError as exc:
            return frames, exc.code
        if got is None:
            return frames, None
        frames += got


def error_code(frames: Sequence[Frame]) -> str | None:
    errors = [f for f in frames if isinstance(f, Error)]
    return errors[-1].code if errors else None


async def both(hostile: Awaitable[None], w: World) -> None:
    await asyncio.gather(hostile, good_peer(w))


async def test_forged_signature(world: World) -> None:
    w = world
    msgs = chain(w.hostile, 5)
    bad = bytearray(msgs[3].raw)
    sig = bad.index(msgs[3].signature)
    bad[sig + 7] ^= 0x01

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 5)
        await ch.send(Msgs(tuple([m.raw for m in msgs[:3]] + [bytes(bad), msgs[4].raw])),
                      Done(5))
        frames, _ = await drain(ch)
        assert error_code(frames) == "bad-signature"

    await both(hostile(), w)
    assert (await w.finished()).error == "bad-signature"
    assert await w.stored(w.hid) == [m.raw for m in msgs[:3]]


async def test_forged_signature_with_only_pings_after_it(world: World) -> None:
    """A bad signature is found when its batch is settled, after the frame was read: the link
    ends then, not at the peer's next frame. This peer sends only pings after it, which keep a
    link that waits for frames alive for ever, and stay under the stall timeout."""
    w = world
    msgs = chain(w.hostile, 4)
    bad = bytearray(msgs[3].raw)
    bad[bad.index(msgs[3].signature) + 7] ^= 0x01
    loop = asyncio.get_running_loop()

    async def pings(ch: Channel) -> None:
        with contextlib.suppress(FeedlogError):
            while True:
                await asyncio.sleep(0.2)
                await ch.send(Ping())

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 4)
        await ch.send(Msgs(tuple([m.raw for m in msgs[:3]] + [bytes(bad)])))
        t0 = loop.time()
        pinger = asyncio.create_task(pings(ch))
        try:
            frames, _ = await asyncio.wait_for(drain(ch), 10)
        finally:
            pinger.cancel()
        assert error_code(frames) == "bad-signature"
        assert loop.time() - t0 < config().stall_timeout / 2

    await both(hostile(), w)
    assert (await w.finished()).error == "bad-signature"
    assert await w.stored(w.hid) == [m.raw for m in msgs[:3]]


async def test_fork_records_proof_and_freezes_feed(world: World) -> None:
    w = world
    msgs = chain(w.hostile, 3)
    await w.node.ingestor().ingest([m.raw for m in msgs])
    other = chain(w.hostile, 1, msgs[1].state, tag="other")[0]  # a second seq 3

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 3)
        await ch.send(Msgs((other.raw,)), Done(1))
        frames: list[Frame] = []
        while not any(isinstance(f, Synced) for f in frames):
            got = await asyncio.wait_for(ch.receive(), 10)
            assert got is not None
            frames += got
        await ch.send(Synced())
        rest, end = await drain(ch)
        assert error_code(frames + rest) is None and end is None
        await ch.close()

    await both(hostile(), w)
    res = await w.finished()
    # a fork is a fact about the author, not misbehaviour of the peer that relayed it
    assert res.error is None and res.caught_up and res.forks == 1, res
    info = await w.node.feed_info(w.hid)
    assert info is not None and info.forked_seq == 3 and info.seq == 3
    assert len(await w.node.store.fork_proofs(w.hid)) == 1
    assert await w.stored(w.hid) == [m.raw for m in msgs]
    # frozen: even a valid continuation of the stored chain is refused now
    nxt = chain(w.hostile, 1, msgs[2].state, tag="next")[0]
    report = await w.node.ingestor().ingest([nxt.raw])
    assert report.added == 0 and report.codes() == {"feed-forked": 1}


async def test_seq_gap(world: World) -> None:
    w = world
    msgs = chain(w.hostile, 5)

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 5)
        await ch.send(Msgs((msgs[0].raw, msgs[1].raw, msgs[3].raw, msgs[4].raw)), Done(4))
        frames, _ = await drain(ch)
        assert error_code(frames) == "seq-gap"

    await both(hostile(), w)
    assert (await w.finished()).error == "seq-gap"
    assert await w.stored(w.hid) == [m.raw for m in msgs[:2]]


async def test_message_for_a_feed_we_did_not_ask_for(world: World) -> None:
    w = world
    stranger = Keypair.from_seed(os.urandom(32))
    theirs = chain(stranger, 2)
    own = chain(w.hostile, 2)

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 2)
        await ch.send(Msgs((own[0].raw, own[1].raw, theirs[0].raw)), Done(3))
        frames, _ = await drain(ch)
        assert error_code(frames) == "not-wanted"

    await both(hostile(), w)
    assert (await w.finished()).error == "not-wanted"
    assert await w.stored(w.hid) == [own[0].raw, own[1].raw]  # what validated before it
    assert await w.stored(FeedId(stranger.public)) == []
    assert await w.node.feed_info(FeedId(stranger.public)) is None


async def test_oversize_frame(world: World) -> None:
    w = world

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 0)
        # a length prefix far above the limit, then a little of the "body"
        await ch.send_frames([(w.rep.config.max_frame + 1).to_bytes(4, "big") + b"\0" * 100])
        frames, _ = await drain(ch)
        assert error_code(frames) == "frame-too-large"

    await both(hostile(), w)
    assert (await w.finished()).error == "frame-too-large"
    assert await w.stored(w.hid) == []


async def test_garbage_after_the_handshake(world: World) -> None:
    w = world

    async def hostile() -> None:
        ch = await connect(w)
        ch.writer.write(os.urandom(4096))  # not box-stream at all
        await ch.writer.drain()
        frames, _ = await drain(ch)
        assert error_code(frames) == "box-auth-failed"

    await both(hostile(), w)
    assert (await w.finished()).error == "box-auth-failed"


@pytest.mark.parametrize("ending", ["goodbye", "eof"])
async def test_truncated_frame(world: World, ending: str) -> None:
    w = world
    msgs = chain(w.hostile, 2)

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 2)
        whole = encode_frame(Msgs((msgs[0].raw, msgs[1].raw)))
        await ch.send_frames([whole[: len(whole) // 2]])
        if ending == "goodbye":
            await ch.say_goodbye()
        else:  # a plain TCP end (FIN) in the middle of a frame
            ch.writer.write_eof()
        frames, _ = await drain(ch)
        assert error_code(frames) == "truncated-frame"
        ch.writer.close()

    await both(hostile(), w)
    assert (await w.finished()).error == "truncated-frame"
    assert await w.stored(w.hid) == []


async def test_stall_mid_stream(world: World) -> None:
    w = world
    w.rep.config.stall_timeout = 1.5
    msgs = chain(w.hostile, 6)
    stalling = asyncio.Event()

    async def hostile() -> None:
        ch = await connect(w)
        await opening(ch, w, 6)
        await ch.send(Msgs(tuple(m.raw for m in msgs[:3])))  # half of the promise, no DONE
        stalling.set()
        frames, _ = await drain(ch)  # the node gives up on us
        assert error_code(frames) == "peer-stalled"

    async def good_while_stalled() -> None:
        await stalling.wait()
        await good_peer(w)
        # served while the staller still held its connection
        assert not any(r.peer == feed_id_text(w.hid) for r in w.rep.finished)

    await asyncio.gather(hostile(), good_while_stalled())
    assert (await w.finished()).error == "peer-stalled"
    assert await w.stored(w.hid) == [m.raw for m in msgs[:3]]


def hold_hostile_appends(w: World) -> asyncio.Event:
    """Hold the node's store shut for the hostile peer's messages until the returned event is
    set (everything else is stored as usual)."""
    gate = asyncio.Event()
    store = w.node.store
    real_append = store.append

    async def slow_append(batch: Sequence[Message]) -> None:
        if any(m.author == w.hid for m in batch):
            await gate.wait()
        await real_append(batch)

    store.append = slow_append  # type: ignore[method-assign,assignment]
    return gate


async def test_a_live_peer_that_reads_nothing_is_dropped(world: World) -> None:
    """The opposite flood: a live peer that wants the node's feed, pings, and never reads.
    What the node pushes to it piles up until the socket is full; once nothing has drained
    for the stall timeout the node ends the link (peer-stalled), so its queue stays bounded."""
    w = world
    ch = await connect(w)
    await ch.send(Hello(VERSION, b"", True),
                  Notes(MODE_FULL, True, (Entry(w.hid, make_note(0, True)),
                                          Entry(w.node.id, make_note(0, True)))),
                  Done(0))

    async def pings() -> None:
        with contextlib.suppress(FeedlogError):
            while True:
                await asyncio.sleep(0.5)
                await ch.send(Ping())

    pinger = asyncio.create_task(pings())
    try:
        for _ in range(6):  # ~6 MB pushed at it, far more than the sockets hold
            await w.node.publish_many(["x" * 1000] * 1000)
        res = await w.finished(limit=config().stall_timeout + 10)
        assert res.error == "peer-stalled", res
        assert not w.rep.links
        await good_peer(w)
    finally:
        pinger.cancel()
        ch.writer.transport.abort()


async def test_flood_faster_than_we_store(world: World) -> None:
    """The store is held shut while the peer writes far more than the node may buffer: the node
    stops reading (TCP back-pressure), so what it took in stays bounded."""
    w = world
    msgs = chain(w.hostile, 200, pad=4000)  # big messages: a flood of few decodes
    gate = hold_hostile_appends(w)
    frames = msgs_frames([m.raw for m in msgs])
    flood = 16 * 1024 * 1024
    repeats = flood // sum(map(len, frames)) + 1
    ch = await connect(w)
    await opening(ch, w, len(msgs))
    await ch.send_frames(frames)
    writes = asyncio.create_task(_flood(ch, frames, repeats))
    await asyncio.sleep(0.3)
    link = next(iter(w.rep.links))
    taken = []
    for _ in range(20):  # the node's intake stops growing while the store is shut
        await asyncio.sleep(0.1)
        taken.append(link.channel.counters.bytes_in
                     + len(link.channel.reader._buffer))  # type: ignore[attr-defined]
    assert max(taken) < 6 * 1024 * 1024, taken  # of 16 MiB written to it
    assert taken[-1] - taken[len(taken) // 2] < 256 * 1024, taken
    await good_peer(w)  # the node serves others meanwhile
    writes.cancel()
    ch.writer.transport.abort()
    gate.set()
    res = await w.finished()
    # the abort (inside a frame, most likely), nothing else
    assert res.error in ("truncated-frame", "connection-lost", "unexpected-eof"), res
    assert await w.stored(w.hid) == [m.raw for m in msgs]


async def _flood(ch: Channel, frames: list[bytes], repeats: int) -> None:
    for _ in range(repeats):
        data = ch._enc.seal(b"".join(frames))
        ch.writer.write(data)  # never wait for the node
        await asyncio.sleep(0)


async def test_wrong_network_key(world: World) -> None:
    w = world

    async def hostile() -> None:
        with pytest.raises(HandshakeError) as exc:
            await connect(w, network_key=bytes(32))
        assert exc.value.code in {"handshake-eof", "handshake-auth-failed"}

    await both(hostile(), w)
    codes = [r.error for r in w.rep.finished if r.peer == "?"]
    assert codes == ["bad-network-key"]


async def test_blocked_identity_is_refused(world: World) -> None:
    w = world
    await w.node.block(w.hid)
    await w.rep.entries()  # the server learns its block list

    async def hostile() -> None:
        with pytest.raises(HandshakeError):
            await connect(w)

    await both(hostile(), w)
    codes = [r.error for r in w.rep.finished if r.peer == "?"]
    assert codes == ["peer-rejected"]


async def test_handshake_that_never_completes(world: World) -> None:
    w = world
    w.rep.config.handshake_timeout = 0.5

    async def hostile() -> None:
        reader, writer = await asyncio.open_connection(w.address.host, w.address.port)
        writer.write(os.urandom(10))  # part of a client hello, then nothing
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the node hangs up
        writer.close()

    await both(hostile(), w)
    codes = [r.error for r in w.rep.finished if r.peer == "?"]
    assert codes == ["handshake-timeout"]

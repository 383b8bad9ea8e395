"""asyncio shell around the sans-IO handshake, box-stream and frame decoder (spec/replication.md
§2-§5): a Channel is an authenticated, encrypted, framed duplex connection to one known peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from feedlog.core.boxstream import BoxStreamReader, BoxStreamWriter
from feedlog.core.crypto import Keypair
from feedlog.core.errors import FeedlogError, HandshakeError, LocalError, ProtocolError
from feedlog.core.handshake import ClientHandshake, ServerHandshake
from feedlog.core.ids import FeedId, feed_id_text, parse_feed_id
from feedlog.core.wire import MAX_FRAME_SIZE, Frame, FrameDecoder, encode_frame

# spec/replication.md §2.1: sha256("feedlog/network/v1"); peers of another key never connect
DEFAULT_NETWORK_KEY = bytes.fromhex(
    "268998bb20e475062a153f57dd69e1d1b7275b55e8df11a1c0dd45f7e327a2dd")
DEFAULT_PORT = 8765
READ_SIZE = 256 * 1024
SOCKET_READ = 256 * 1024  # most bytes asyncio's transport takes from the socket at once


def parse_network_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise LocalError("a network key is 64 hex characters (32 bytes)", code="bad-network-key")
    return key


# The scheme (optional, any case), the host (an IPv6 one in brackets, with its zone if it has
# one), the port and the feed id.
_ADDRESS = re.compile(
    r"(?:(?i:feedlog)://)?(\[[0-9A-Fa-f:.]+(?:%[\w.-]+)?\]|[^/:\[\]\s]+):(\d{1,5})/(\S+)")


@dataclass(frozen=True, slots=True)
class Address:
    """Where a server listens and who it is: ``feedlog://HOST:PORT/FEED_ID``."""

    host: str
    port: int
    feed: FeedId

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"feedlog://{host}:{self.port}/{feed_id_text(self.feed)}"

    @classmethod
    def parse(cls, text: str) -> Address:
        m = _ADDRESS.fullmatch(text.strip())
        if m is None:
            raise LocalError(f"not an address: {text!r} (expected feedlog://HOST:PORT/FEED_ID)",
                             code="bad-address")
        host, port = m.group(1).strip("[]"), int(m.group(2))
        if not 0 < port < 65536:
            raise LocalError(f"port {port} out of range", code="bad-address")
        return cls(host, port, parse_feed_id(m.group(3)))


@dataclass
class Counters:
    bytes_in: int = 0
    bytes_out: int = 0


class Channel:
    """Frames over box-stream over a stream pair. Not safe for concurrent ``send`` calls from
    several tasks (the replicator has one writer task per channel)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: FeedId, enc: BoxStreamWriter, dec: BoxStreamReader, early: bytes,
                 counters: Counters, *, max_frame: int = MAX_FRAME_SIZE,
                 read_size: int = READ_SIZE) -> None:
        self.reader, self.writer, self.peer = reader, writer, peer
        self.read_size = read_size  # most bytes taken from the socket buffer per read
        self._enc, self._dec = enc, dec
        self._frames = FrameDecoder(max_frame=max_frame)
        self._pending = bytearray(early)
        self.counters = counters
        self.peer_said_goodbye = False
        # a peer that reads nothing of what we send for this long is stalled (None: wait)
        self.drain_timeout: float | None = None

    @property
    def remote(self) -> str:
        info = self.writer.get_extra_info("peername")
        return f"{info[0]}:{info[1]}" if isinstance(info, tuple) else "?"

    async def send_frames(self, encoded: list[bytes]) -> None:
        """Seal and write already encoded frames, then wait for the socket to drain."""
        if self._enc.closed or self.writer.is_closing():
            raise ProtocolError("connection closed", code="connection-lost")
        data = self._enc.seal(b"".join(encoded))
        self.counters.bytes_out += len(data)
        self.writer.write(data)
        try:
            if self.drain_timeout is None:
                await self.writer.drain()
            else:
                await asyncio.wait_for(self.writer.drain(), self.drain_timeout)
        except TimeoutError:
            raise ProtocolError(f"the peer read nothing for {self.drain_timeout:g} s",
                                code="peer-stalled") from None
        except (ConnectionError, OSError) as exc:
            raise ProtocolError(f"connection lost: {exc}", code="connection-lost") from None

    async def send(self, *frames: Frame) -> None:
        await self.send_frames([encode_frame(f) for f in frames])

    async def receive(self) -> list[Frame] | None:
        """The next frames (at least one), or None after the peer's goodbye. A partial frame
        at the goodbye or EOF is an error (``truncated-frame`` / ``unexpected-eof``)."""
        while True:
            if self._pending:
                budget = self._dec.receive_budget()
                piece = bytes(self._pending[:budget])
                del self._pending[:budget]
                self._dec.receive_data(piece)
                frames: list[Frame] = []
                for chunk in self._dec:
                    frames += self._frames.feed(chunk)
                if self._dec.closed:
                    self.peer_said_goodbye = True
                    if not self._frames.at_boundary():
                        raise ProtocolError("goodbye inside a frame", code="truncated-frame")
                    return frames or None
                if frames:
                    return frames
                continue
            try:
                data = await self.reader.read(self.read_size)
            except (ConnectionError, OSError) as exc:
                raise ProtocolError(f"connection lost: {exc}", code="connection-lost") from None
            self.counters.bytes_in += len(data)
            if not data:
                if not self._frames.at_boundary():
                    raise ProtocolError("connection ended inside a frame", code="truncated-frame")
                self._dec.receive_data(b"")  # raises unexpected-eof unless after goodbye
                return None
            self._pending += data

    async def say_goodbye(self) -> None:
        """Send the box-stream goodbye (once); the socket stays open for the peer's."""
        with contextlib.suppress(ConnectionError, OSError, TimeoutError, FeedlogError):
            if not self._enc.closed and not self.writer.is_closing():
                data = self._enc.goodbye()
                self.counters.bytes_out += len(data)
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), 5)

    async def close(self, *, goodbye: bool = True) -> None:
        try:
            if goodbye:
                await self.say_goodbye()
        finally:
            await close_writer(self.writer)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def _drive(hs: ClientHandshake | ServerHandshake, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, counters: Counters) -> None:
    out = hs.data_to_send()
    if out:
        writer.write(out)
        counters.bytes_out += len(out)
    while not hs.done:
        try:
            data = await reader.read(hs.bytes_needed())
        except (ConnectionError, OSError):
            data = b""
        counters.bytes_in += len(data)
        hs.receive_data(data)
        out = hs.data_to_send()
        if out:
            writer.write(out)
            counters.bytes_out += len(out)
            await writer.drain()


async def client_channel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                         network_key: bytes, keys: Keypair, server: FeedId,
                         timeout: float, max_frame: int = MAX_FRAME_SIZE,
                         read_size: int = READ_SIZE) -> Channel:
    """Run the client side of the handshake; on any failure close and raise HandshakeError."""
    counters = Counters()
    hs = ClientHandshake(network_key, keys, server, os.urandom(32))
    return await _finish(hs, reader, writer, counters, timeout, max_frame, read_size)


async def server_channel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                         network_key: bytes, keys: Keypair, timeout: float,
                         authorize: Callable[[bytes], bool] | None = None,
                         max_frame: int = MAX_FRAME_SIZE,
                         read_size: int = READ_SIZE) -> Channel:
    counters = Counters()
    hs = ServerHandshake(network_key, keys, os.urandom(32), authorize)
    return await _finish(hs, reader, writer, counters, timeout, max_frame, read_size)


async def _finish(hs: ClientHandshake | ServerHandshake, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter, counters: Counters, timeout: float,
                  max_frame: int, read_size: int) -> Channel:
    try:
        await asyncio.wait_for(_drive(hs, reader, writer, counters), timeout)
    except TimeoutError:
        await close_writer(writer)
        raise HandshakeError(f"no handshake within {timeout:g} s",
                             code="handshake-timeout") from None
    except HandshakeError:
        await close_writer(writer)
        raise
    except (ConnectionError, OSError) as exc:
        await close_writer(writer)
        raise HandshakeError(f"connection lost during the handshake: {exc}",
                             code="handshake-eof") from None
    keys = hs.result
    enc = BoxStreamWriter(keys.encrypt_key, keys.encrypt_nonce)
    dec = BoxStreamReader(keys.decrypt_key, keys.decrypt_nonce)
    return Channel(reader, writer, FeedId(keys.remote_public), enc, dec, hs.leftover(),
                   counters, max_frame=max_frame, read_size=read_size)

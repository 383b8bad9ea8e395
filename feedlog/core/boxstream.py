"""box-stream: authenticated, encrypted framing after the handshake (spec/replication.md §3).

How this works: each direction has its own key and starting nonce from the handshake. A packet
is a 34-byte header box followed by the body ciphertext:

    header = secretbox(u16_be(len) || body_tag, nonce n)        34 bytes
    body   = secretbox(plaintext, nonce n+1) without its tag    len bytes, 1..4096

after which the nonce is n+2. The nonce is a 24-byte big-endian counter that wraps mod 2^192.
A header whose 18 plaintext bytes are all zero is the goodbye; the stream ends there.

Invariants of the reader:
- A length is used only after its header has authenticated, and a body is released only after
  it has authenticated; nothing unauthenticated ever leaves the reader.
- Bounded buffering: the reader holds at most MAX_PACKET_SIZE (4130) bytes, counting both raw
  bytes not yet decrypted and decrypted chunks the caller has not taken yet. ``receive_data``
  refuses (LocalError "box-buffer-full", state unchanged) a chunk longer than
  ``receive_budget()``; take chunks with ``next_chunks()`` to make room again. A driver reads
  at most ``receive_budget()`` bytes at a time.
- The first ProtocolError kills the reader: later ``receive_data`` calls raise it again.
  Chunks that authenticated before the failure can still be taken.

Driving a reader from a shell:

    while not reader.closed:
        reader.receive_data(read_up_to(reader.receive_budget()))   # b"" at EOF
        for chunk in reader:
            handle(chunk)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import NoReturn

from feedlog.core.crypto import secretbox_open, secretbox_seal
from feedlog.core.errors import LocalError, ProtocolError

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
HEADER_PLAIN_SIZE = 2 + TAG_SIZE  # u16 length + body tag
HEADER_SIZE = TAG_SIZE + HEADER_PLAIN_SIZE  # 34
MAX_BODY_SIZE = 4096
MAX_PACKET_SIZE = HEADER_SIZE + MAX_BODY_SIZE  # 4130

_GOODBYE_PLAIN = bytes(HEADER_PLAIN_SIZE)
_NONCE_MODULUS = 1 << (8 * NONCE_SIZE)


def nonce_add(nonce: bytes, amount: int) -> bytes:
    """``nonce + amount`` as a 24-byte big-endian counter, wrapping mod 2^192."""
    value = (int.from_bytes(nonce, "big") + amount) % _NONCE_MODULUS
    return value.to_bytes(NONCE_SIZE, "big")


def _check_params(key: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise LocalError("a box-stream key is 32 bytes", code="bad-key")
    if not isinstance(nonce, bytes | bytearray) or len(nonce) != NONCE_SIZE:
        raise LocalError("a box-stream nonce is 24 bytes", code="bad-key")
    return bytes(key), bytes(nonce)


class BoxStreamWriter:
    """Seals outgoing plaintext into packets; ``goodbye()`` ends the stream."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._key, self._nonce = _check_params(key, nonce)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` as packets of at most 4096 body bytes (b"" gives b"")."""
        if self._closed:
            raise LocalError("the box-stream writer already said goodbye", code="box-closed")
        out = bytearray()
        view = memoryview(plaintext)
        for start in range(0, len(view), MAX_BODY_SIZE):
            out += self._packet(bytes(view[start : start + MAX_BODY_SIZE]))
        return bytes(out)

    def goodbye(self) -> bytes:
        """The final header; nothing may be sealed after it."""
        if self._closed:
            raise LocalError("the box-stream writer already said goodbye", code="box-closed")
        self._closed = True
        return secretbox_seal(_GOODBYE_PLAIN, self._nonce, self._key)

    def _packet(self, body: bytes) -> bytes:
        body_box = secretbox_seal(body, nonce_add(self._nonce, 1), self._key)
        tag, ciphertext = body_box[:TAG_SIZE], body_box[TAG_SIZE:]
        header_plain = len(body).to_bytes(2, "big") + tag
        header = secretbox_seal(header_plain, self._nonce, self._key)
        self._nonce = nonce_add(self._nonce, 2)
        return header + ciphertext


class BoxStreamReader:
    """Opens incoming packets. Feed bytes with ``receive_data``; take plaintext with
    ``next_chunks()`` or by iterating. b"" is EOF, which is clean only after the goodbye."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._key, self._nonce = _check_params(key, nonce)
        self._raw = bytearray()
        self._body: tuple[int, bytes] | None = None  # (length, tag) of an authenticated header
        self._chunks: deque[bytes] = deque()
        self._pending = 0  # bytes in self._chunks
        self._closed = False
        self._eof = False
        self._error: ProtocolError | None = None

    @property
    def closed(self) -> bool:
        """True once the peer's goodbye has authenticated."""
        return self._closed

    @property
    def error(self) -> ProtocolError | None:
        return self._error

    def receive_budget(self) -> int:
        """The most bytes ``receive_data`` accepts right now (see the module docstring)."""
        return max(0, MAX_PACKET_SIZE - len(self._raw) - self._pending)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; at most ``receive_budget()`` of them per call."""
        if self._error is not None:
            raise ProtocolError(
                f"box-stream already failed: {self._error.message}", code=self._error.code
            )
        if self._eof:
            raise LocalError("the box-stream already reached EOF", code="box-eof")
        if not data:
            self._eof = True
            if not self._closed:
                self._fail("unexpected-eof", "peer hung up without a goodbye")
            return
        if self._closed:
            self._fail("data-after-goodbye", "bytes arrived after the goodbye")
        if len(data) > self.receive_budget():
            raise LocalError(
                f"{len(data)} bytes exceed the receive budget {self.receive_budget()}",
                code="box-buffer-full",
            )
        self._raw += data
        self._process()

    def next_chunks(self) -> list[bytes]:
        """Take every decrypted chunk received so far, in order."""
        out = list(self._chunks)
        self._chunks.clear()
        self._pending = 0
        return out

    def __iter__(self) -> Iterator[bytes]:
        """Yield (and take) the decrypted chunks available now."""
        while self._chunks:
            chunk = self._chunks.popleft()
            self._pending -= len(chunk)
            yield chunk

    def _process(self) -> None:
        while True:
            if self._body is None:
                if len(self._raw) < HEADER_SIZE:
                    return
                header = bytes(self._raw[:HEADER_SIZE])
                del self._raw[:HEADER_SIZE]
                plain = self._open(header, self._nonce, "header")
                if plain == _GOODBYE_PLAIN:
                    self._closed = True
                    if self._raw:
                        self._fail("data-after-goodbye", "bytes arrived after the goodbye")
                    return
                length = int.from_bytes(plain[:2], "big")
                if not 1 <= length <= MAX_BODY_SIZE:
                    self._fail("box-bad-length", f"authenticated body length {length}")
                self._body = (length, plain[2:])
            length, tag = self._body
            if len(self._raw) < length:
                return
            ciphertext = bytes(self._raw[:length])
            del self._raw[:length]
            chunk = self._open(tag + ciphertext, nonce_add(self._nonce, 1), "body")
            self._nonce = nonce_add(self._nonce, 2)
            self._body = None
            self._chunks.append(chunk)
            self._pending += len(chunk)

    def _open(self, box: bytes, nonce: bytes, what: str) -> bytes:
        plain = secretbox_open(box, nonce, self._key)
        if plain is None:
            self._fail("box-auth-failed", f"packet {what} does not authenticate")
        return plain

    def _fail(self, code: str, message: str) -> NoReturn:
        self._error = ProtocolError(message, code=code)
        self._raw.clear()
        self._body = None
        raise self._error

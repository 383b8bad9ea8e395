"""A signature-check worker process (run by feedlog/verify_pool.py as a script, by path).

Why a process: threads checking signatures share the GIL with the event loop, and each one
has to take it back after every libsodium call; while the loop runs Python (decoding,
building store batches) they wait for it, so checking and the loop's work alternate instead
of overlapping. A process has its own GIL.

It imports nothing from feedlog (so it starts in a few tens of ms) and makes exactly the call
``feedlog.core.crypto.verify_many`` makes: libsodium's ``crypto_sign_open`` over
``signature || tag || data`` (tests/test_verify_pool.py checks the two agree).

Protocol, little-endian, over stdin / stdout, requests answered in order:
  request   u32 body length, u32 count, body = u8 tag length, tag,
            then per item: public (32), u32 n, then n bytes: signature (64), tag, data
  answer    u32 count, then one byte per item: 1 when the signature verifies, else 0
End of stdin ends the worker. Each item carries ``signature || tag || data`` whole, as
``crypto_sign_open`` takes it, so the worker passes pointers into the request instead of
copying every message (the request's tag is the one every item must carry: an item whose
bytes after the signature do not start with it is answered 0).
"""

from __future__ import annotations

import os
import struct
import sys

from nacl._sodium import ffi, lib  # type: ignore[import-not-found,unused-ignore]

KEY_SIZE = 32
SIGNATURE_SIZE = 64
_HEAD = struct.Struct("<II")
_LEN = struct.Struct("<I")


def check(tag: bytes, body: bytes, count: int) -> bytes:
    """The answer bytes for one request body (after the tag)."""
    open_ = lib.crypto_sign_open
    out = bytearray(count)
    base = ffi.from_buffer("unsigned char[]", body)
    size = 0
    buf = out_len = None
    p = 0
    t = len(tag)
    unpack = _LEN.unpack_from
    for i in range(count):
        (n,) = unpack(body, p + KEY_SIZE)
        start = p + KEY_SIZE + 4
        if start + n > len(body):  # never pass libsodium a pointer past the request
            raise ValueError("request item runs past the body")
        if n > size:
            size = n + 1024
            buf = ffi.new("unsigned char[]", size)
            out_len = ffi.new("unsigned long long *")
        if (n >= SIGNATURE_SIZE + t and body[start + SIGNATURE_SIZE : start + SIGNATURE_SIZE + t]
                == tag and open_(buf, out_len, base + start, n, base + p) == 0):
            out[i] = 1
        p = start + n
    if p != len(body):
        raise ValueError("request body has trailing bytes")
    return bytes(out)


def _read_exactly(f: object, n: int) -> bytes:
    data: bytes = f.read(n)  # type: ignore[attr-defined]
    if len(data) != n:
        raise EOFError
    return data


def main() -> None:
    inp = os.fdopen(0, "rb", buffering=1 << 20)
    out = 1
    while True:
        try:
            length, count = _HEAD.unpack(_read_exactly(inp, _HEAD.size))
            body = _read_exactly(inp, length)
        except EOFError:
            return
        tag_len = body[0]
        tag = body[1 : 1 + tag_len]
        answer = _LEN.pack(count) + check(tag, body[1 + tag_len :], count)
        view = memoryview(answer)
        while view:
            view = view[os.write(out, view) :]


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)

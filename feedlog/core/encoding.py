"""Strict canonical CBOR (spec/feed.md §3).

feedlog uses a small subset of CBOR (RFC 8949): unsigned and negative integers in the 64-bit
range, byte strings, text strings, arrays, maps whose keys are text strings, true, false and null.
No floats, no tags, no undefined, no indefinite lengths. Every value has exactly one encoding, the
canonical one: shortest integer and length forms, definite lengths, map keys in bytewise order of
their encodings. Because every key is a text string, that order is also RFC 7049's "length first,
then bytewise" order, which is what cbor2's ``canonical=True`` produces: the two rules agree on
this subset, so we can rely on cbor2's encoder.

``decode_strict_reference`` decodes with cbor2 (its C extension is lenient: it ignores trailing
bytes and accepts indefinite lengths, duplicate keys and bignum tags), then walks the value to
reject anything outside the subset, and re-encodes it canonically: the input is accepted only
when the bytes are identical. That single rule rejects every non-canonical form and every
trailing byte, and it is the definition the rest of this module is tested against.

``decode_strict`` first tries ``parse_canonical``, a small hand-written parser that accepts only
what it can prove is the canonical encoding of a subset value as it reads it (shortest heads,
definite lengths, strictly increasing encoded map keys, strict UTF-8, nothing after the item).
For such input, re-encoding the result gives the input back, so the reference path would accept
it too and return the same value. Anything else, valid or not, goes to the reference path, which
alone decides the error code. So the fast path can only make things faster, never change an
answer (tests/core/test_fastpath.py checks the two agree on random and mutated inputs).
"""

from __future__ import annotations

from typing import Any

import cbor2

from feedlog.core.errors import InvalidMessage

Value = Any  # int | bytes | str | bool | None | list[Value] | dict[str, Value]

INT_MIN = -(2**64)
INT_MAX = 2**64 - 1
MAX_DEPTH = 16


def encode(value: Value) -> bytes:
    """Canonical encoding of a value of the subset (the caller guarantees the subset)."""
    return bytes(cbor2.dumps(value, canonical=True))


def head(major: int, n: int) -> bytes:
    """The canonical head of major type ``major`` (0-7) with argument ``n`` (0 <= n < 2**64)."""
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2)
    if n < 0x100000000:
        return bytes((m | 26,)) + n.to_bytes(4)
    return bytes((m | 27,)) + n.to_bytes(8)


def encode_checked(value: Value, what: str = "value") -> bytes:
    """``check_subset`` then ``encode``, in one pass for the usual flat map of text keys to
    text, byte strings, integers, booleans and null (tests/core/test_fastpath.py compares
    the two)."""
    if type(value) is dict:
        items = []
        for k, v in value.items():
            if type(k) is not str:
                break
            t = type(v)
            if t is str:
                b = v.encode("utf-8")
                n = len(b)
                ev = (bytes((0x60 + n,)) if n < 24 else head(3, n)) + b
            elif t is bytes:
                ev = head(2, len(v)) + v
            elif t is int and 0 <= v <= INT_MAX:
                ev = head(0, v)
            elif t is int and INT_MIN <= v < 0:
                ev = head(1, -1 - v)
            elif v is None:
                ev = b"\xf6"
            elif t is bool:
                ev = b"\xf5" if v else b"\xf4"
            else:
                break
            kb = k.encode("utf-8")
            n = len(kb)
            items.append(((bytes((0x60 + n,)) if n < 24 else head(3, n)) + kb, ev))
        else:
            items.sort()  # bytewise order of the encoded keys (distinct: dict keys are)
            return head(5, len(items)) + b"".join(k + v for k, v in items)
    check_subset(value, what)
    return encode(value)


def decode_strict(data: bytes, *, what: str = "value") -> Value:
    """Decode ``data`` as exactly one canonical CBOR item of the subset.

    Raises InvalidMessage with code ``malformed`` (not CBOR, truncated), ``bad-cbor-type``
    (outside the subset), ``trailing-bytes`` or ``non-canonical``.
    """
    try:
        value, end = parse_canonical(data)
        if end == len(data):
            return value
    except NotProven:
        pass
    return decode_strict_reference(data, what=what)


def parse_canonical(data: bytes) -> tuple[Value, int]:
    """The fast path of ``decode_strict`` alone: (value, end) of the item at ``data[0]`` when it
    is provably canonical, which ``decode_strict`` accepts only if ``end == len(data)``.
    Raises NotProven for anything else (valid or not: the reference path decides)."""
    try:
        return _parse_item(data, 0, 0)
    except (_NotProven, IndexError, UnicodeDecodeError):
        raise NotProven from None


def decode_strict_reference(data: bytes, *, what: str = "value") -> Value:
    """``decode_strict`` by the reference rule only (decode, check the subset, re-encode)."""
    value = loads_or_malformed(data, what=what, max_depth=MAX_DEPTH + 2)
    _check_subset(value, 0, what)
    canonical = encode(value)
    if canonical != data:
        if data.startswith(canonical):
            raise InvalidMessage(f"{what} has trailing bytes", code="trailing-bytes")
        raise InvalidMessage(f"{what} is not canonically encoded", code="non-canonical")
    return value


def decode_fixed(data: bytes, *, what: str) -> Value:
    """Decode a value made only of unsigned integers, byte strings and null inside arrays.

    For such values the canonical encoding is the unique shortest one: a longer integer or
    length head, an indefinite length or a trailing byte all make the input longer, so a length
    that differs from ``canonical_size`` of the decoded value says which error it is cheaply.
    Equal lengths are not enough, though: cbor2 resolves some tags itself, and a tagged bignum
    (``c2 43 01 00 00``) is exactly as long as the canonical integer (``1a 00 01 00 00``), so an
    input of the right length is still compared with its re-encoding. The caller must check the
    decoded types (an integer that is not a uint, a text string, a map make ``canonical_size``
    raise ``bad-shape``).
    """
    value = loads_or_malformed(data, what=what)
    check_fixed(data, value, what=what)
    return value


def check_fixed(data: bytes, value: Value, *, what: str) -> None:
    """The canonicity check of ``decode_fixed`` for an already decoded ``value``."""
    size = canonical_size(value, what)
    if size != len(data):
        if size < len(data) and encode(value) == data[:size]:
            raise InvalidMessage(f"{what} has trailing bytes", code="trailing-bytes")
        raise InvalidMessage(f"{what} is not canonically encoded", code="non-canonical")
    if encode(value) != data:
        raise InvalidMessage(f"{what} is not canonically encoded (a tag?)", code="non-canonical")


def loads_or_malformed(data: bytes, *, what: str, max_depth: int = 4) -> Value:
    """cbor2's lenient decode; any failure is ``malformed``. Callers check canonicity."""
    try:
        return cbor2.loads(data, max_depth=max_depth)
    except Exception as exc:  # cbor2 raises several types on hostile input
        raise InvalidMessage(f"{what} is not well-formed CBOR ({exc})", code="malformed") from None


def head_size(n: int) -> int:
    """Bytes taken by a canonical CBOR head (major type + argument) for argument ``n``."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    if n < 0x100000000:
        return 5
    return 9


FIXED_MAX_DEPTH = 8  # decode_fixed lets cbor2 nest 4 deep; deeper means shared references


def canonical_size(value: Value, what: str = "value", depth: int = 0) -> int:
    """Length of the canonical encoding of a value of uints, byte strings, null and arrays."""
    t = type(value)
    if t is list:
        if depth > FIXED_MAX_DEPTH:  # cbor2's value sharing tags can even make a cycle
            raise InvalidMessage(f"{what} is not canonically encoded (shared values)",
                                 code="non-canonical")
        n = len(value)
        total = 1 if n < 24 else head_size(n)
        for v in value:  # flat loop: this runs twice per received message
            tv = type(v)
            if tv is bytes:
                n = len(v)
                total += n + (1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else
                              head_size(n))
            elif tv is int and 0 <= v <= INT_MAX:
                total += 1 if v < 24 else head_size(v)
            elif v is None:
                total += 1
            elif tv is list:
                total += canonical_size(v, what, depth + 1)
            else:
                raise InvalidMessage(f"{what} contains a value of the wrong type",
                                     code="bad-shape")
        return total
    if t is bytes:
        return head_size(len(value)) + len(value)
    if t is int and 0 <= value <= INT_MAX:
        return head_size(value)
    if value is None:
        return 1
    raise InvalidMessage(f"{what} contains a value of the wrong type", code="bad-shape")


def check_subset(value: Value, what: str = "value") -> None:
    """Raise ``bad-cbor-type`` unless ``value`` lies in feedlog's CBOR subset."""
    _check_subset(value, 0, what)


def _check_subset(value: Value, depth: int, what: str) -> None:
    if depth > MAX_DEPTH:
        raise InvalidMessage(f"{what} nests deeper than {MAX_DEPTH}", code="bad-cbor-type")
    t = type(value)
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidMessage(f"{what} has an integer out of range", code="bad-cbor-type")
    elif t is bytes or t is str or t is bool or value is None:
        return
    elif t is list:
        for item in value:
            _check_subset(item, depth + 1, what)
    elif t is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidMessage(f"{what} has a map key that is not text", code="bad-cbor-type")
            _check_subset(item, depth + 1, what)
    else:
        raise InvalidMessage(
            f"{what} contains a {t.__name__}, which feedlog's CBOR subset excludes",
            code="bad-cbor-type",
        )


# --- the fast path of decode_strict -----------------------------------------------------------

FAST_MAX_DEPTH = 8  # deeper values take the reference path (which allows MAX_DEPTH)


class NotProven(Exception):
    """The fast parser cannot prove the input canonical: use the reference path."""


_NotProven = NotProven


def _parse_item(d: bytes, p: int, depth: int) -> tuple[Value, int]:
    """One canonical subset item at ``d[p]``: (value, position after it).

    Raises _NotProven (or IndexError, UnicodeDecodeError) for anything it does not accept.
    A short slice near the end of ``d`` is harmless: positions still advance by the declared
    length, so the caller's final ``end == len(d)`` check fails.
    """
    b = d[p]
    major = b >> 5
    ai = b & 0x1F
    p += 1
    if major == 7:
        if b == 0xF6:
            return None, p
        if b == 0xF5:
            return True, p
        if b == 0xF4:
            return False, p
        raise _NotProven
    # the argument, in its shortest form only
    if ai < 24:
        n = ai
    elif ai == 24:
        n = d[p]
        p += 1
        if n < 24:
            raise _NotProven
    elif ai == 25:
        n = int.from_bytes(d[p : p + 2])
        p += 2
        if n < 0x100:
            raise _NotProven
    elif ai == 26:
        n = int.from_bytes(d[p : p + 4])
        p += 4
        if n < 0x10000:
            raise _NotProven
    elif ai == 27:
        n = int.from_bytes(d[p : p + 8])
        p += 8
        if n < 0x100000000:
            raise _NotProven
    else:
        raise _NotProven  # reserved or indefinite length
    if major == 0:
        return n, p
    if major == 1:
        return -1 - n, p
    # every byte and every item takes at least one byte (and compiled, a slice or a range
    # bound must fit in 64 bits)
    if n > len(d) - p:
        raise _NotProven
    if major == 3:
        return d[p : p + n].decode("utf-8"), p + n
    if major == 2:
        return d[p : p + n], p + n
    if depth >= FAST_MAX_DEPTH:
        raise _NotProven
    if major == 4:
        items = []
        for _ in range(n):
            v, p = _parse_item(d, p, depth + 1)
            items.append(v)
        return items, p
    if major == 5:
        out: dict[str, Value] = {}
        last = b""
        for _ in range(n):
            b = d[p]
            if 0x60 <= b < 0x78:  # the usual short key, read here rather than by a call
                end = p + 1 + b - 0x60
                encoded = d[p:end]
                key = encoded[1:].decode("utf-8")
                p = end
            elif b >> 5 == 3:
                start = p
                key, p = _parse_item(d, p, depth + 1)
                encoded = d[start:p]
            else:
                raise _NotProven  # keys are text strings
            if encoded <= last:  # strictly increasing: sorted, no duplicates
                raise _NotProven
            last = encoded
            b = d[p]
            if 0x60 <= b < 0x78:  # a short text value
                end = p + 1 + b - 0x60
                out[key] = d[p + 1 : end].decode("utf-8")
                p = end
            elif b == 0x78:  # a text value of 24 .. 255 bytes
                size = d[p + 1]  # (not ``n``: compiled, range(n) above would see it change)
                if size < 24:
                    raise _NotProven
                end = p + 2 + size
                out[key] = d[p + 2 : end].decode("utf-8")
                p = end
            elif b < 24:  # a small uint
                out[key] = b
                p += 1
            else:
                out[key], p = _parse_item(d, p, depth + 1)
        return out, p
    raise _NotProven  # tags

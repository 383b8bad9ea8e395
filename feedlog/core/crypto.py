"""Keys, namespaced signatures and hashes (spec/feed.md §2, §4).

Every signature feedlog makes over its own objects is over ``tag || bytes`` where ``tag`` is a
fixed ASCII domain-separation string ending in a NUL byte, so a signature made for one kind of
object can never be replayed as another. The secret handshake (spec/replication.md §2) signs
without a tag because it must match Secret Handshake v1 byte for byte; it uses ``sign_raw``.

This is the only module that imports ``nacl.signing``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from feedlog.core.errors import LocalError

try:  # pynacl's own cffi module: the same libsodium calls as nacl.bindings, minus the wrappers
    from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found,unused-ignore]
    from nacl._sodium import lib as _lib  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - another pynacl layout: fall back to nacl.bindings
    _ffi = _lib = None

KEY_SIZE = 32
SIGNATURE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Keypair:
    """An Ed25519 key pair held as its 32-byte seed."""

    seed: bytes = field(repr=False)
    public: bytes
    _signer: nacl.signing.SigningKey = field(repr=False, compare=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != KEY_SIZE:
            raise LocalError("an Ed25519 seed is 32 bytes", code="bad-key")
        signer = nacl.signing.SigningKey(seed)
        return cls(seed=bytes(seed), public=bytes(signer.verify_key), _signer=signer)

    @property
    def secret64(self) -> bytes:
        """The libsodium 64-byte secret key layout: seed || public."""
        return self.seed + self.public

    def sign(self, tag: bytes, data: bytes) -> bytes:
        """Detached signature over ``tag || data``."""
        # the binding directly: SigningKey.sign wraps the same call in two more objects
        return nacl.bindings.crypto_sign(tag + data, self.seed + self.public)[:SIGNATURE_SIZE]

    def sign_many(self, tag: bytes, items: Sequence[bytes]) -> list[bytes]:
        """``[self.sign(tag, d) for d in items]`` with one buffer and no per-call wrappers
        (libsodium's crypto_sign, which releases the GIL, so a pool signs on every core)."""
        if _lib is None:
            return [self.sign(tag, d) for d in items]
        secret = self.seed + self.public
        size = 0
        buf = out_len = None
        sigs = []
        sign = _lib.crypto_sign
        for d in items:
            m = tag + d
            if len(m) + SIGNATURE_SIZE > size:
                size = len(m) + SIGNATURE_SIZE + 1024
                buf = _ffi.new("unsigned char[]", size)
                out_len = _ffi.new("unsigned long long *")
            if sign(buf, out_len, m, len(m), secret) != 0:
                raise LocalError("libsodium could not sign", code="sign-failed")
            sigs.append(bytes(_ffi.buffer(buf, SIGNATURE_SIZE)))
        return sigs

    def sign_raw(self, data: bytes) -> bytes:
        """Detached signature over ``data`` with no domain tag (Secret Handshake only)."""
        return self._signer.sign(data).signature

    def curve25519_secret(self) -> bytes:
        """The X25519 secret scalar derived from this Ed25519 key."""
        return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(self.secret64)


def verify(public: bytes, tag: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public``'s signature over ``tag || data``."""
    return verify_raw(public, tag + data, signature)


def verify_many(tag: bytes, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """``verify(public, tag, data, signature)`` for each ``(public, data, signature)``, with one
    buffer and no per-call wrappers: the same libsodium call (crypto_sign_open, which releases
    the GIL) as ``verify``, for the hot path of ingest."""
    if _lib is None:
        return [verify(p, tag, d, s) for p, d, s in items]
    size = 0
    buf = out_len = None
    ok = []
    open_ = _lib.crypto_sign_open
    for public, data, signature in items:
        if len(public) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            ok.append(False)
            continue
        signed = signature + tag + data
        if len(signed) > size:
            size = len(signed) + 1024
            buf = _ffi.new("unsigned char[]", size)
            out_len = _ffi.new("unsigned long long *")
        ok.append(open_(buf, out_len, signed, len(signed), public) == 0)
    return ok


def verify_raw(public: bytes, data: bytes, signature: bytes) -> bool:
    if len(public) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        # crypto_sign_open is the public binding of libsodium's verify; cffi drops the GIL
        # for it, so verifying in a thread pool uses every core.
        nacl.bindings.crypto_sign_open(signature + data, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


SECRETBOX_TAG_SIZE = 16


def secretbox_seal(message: bytes, nonce: bytes, key: bytes) -> bytes:
    """``crypto_secretbox_easy``: tag (16) || ciphertext. Called directly on the hot path of
    box-stream: nacl.bindings' argument checks and copies cost as much as encrypting a 4 KiB
    body (the caller checks key and nonce sizes once)."""
    if _lib is None:
        return nacl.bindings.crypto_secretbox(message, nonce, key)
    out = _ffi.new("unsigned char[]", len(message) + SECRETBOX_TAG_SIZE)
    _lib.crypto_secretbox_easy(out, message, len(message), nonce, key)
    return _ffi.buffer(out)[:]  # type: ignore[no-any-return]


def secretbox_open(box: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """``crypto_secretbox_open_easy``: the plaintext, or None when ``box`` does not
    authenticate."""
    if len(box) < SECRETBOX_TAG_SIZE:
        return None
    if _lib is None:
        try:
            return nacl.bindings.crypto_secretbox_open(box, nonce, key)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            return None
    n = len(box) - SECRETBOX_TAG_SIZE
    out = _ffi.new("unsigned char[]", max(1, n))
    if _lib.crypto_secretbox_open_easy(out, box, len(box), nonce, key) != 0:
        return None
    return _ffi.buffer(out, n)[:]  # type: ignore[no-any-return]


def curve25519_public(ed25519_public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 public key (raises on an invalid point)."""
    return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()

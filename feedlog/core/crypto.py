"""Keys, namespaced signatures and hashes (spec/feed.md §2, §4).

Every signature feedlog makes over its own objects is over ``tag || bytes`` where ``tag`` is a
fixed ASCII domain-separation string ending in a NUL byte, so a signature made for one kind of
object can never be replayed as another. The secret handshake (spec/replication.md §2) signs
without a tag because it must match Secret Handshake v1 byte for byte; it uses ``sign_raw``.

This is the only module that imports ``nacl.signing``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from feedlog.core.errors import LocalError

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

    def sign_raw(self, data: bytes) -> bytes:
        """Detached signature over ``data`` with no domain tag (Secret Handshake only)."""
        return self._signer.sign(data).signature

    def curve25519_secret(self) -> bytes:
        """The X25519 secret scalar derived from this Ed25519 key."""
        return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(self.secret64)


def verify(public: bytes, tag: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public``'s signature over ``tag || data``."""
    return verify_raw(public, tag + data, signature)


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


def curve25519_public(ed25519_public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 public key (raises on an invalid point)."""
    return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)


def sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()

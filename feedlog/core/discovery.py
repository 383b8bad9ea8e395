"""LAN discovery records, the dial rule and reconnect backoff (spec/discovery.md).

How this works: a node advertises one DNS-SD service instance of type ``_feedlog._tcp``. The SRV
and A records carry its port and address, as DNS-SD requires. The TXT record carries
``v=1`` and ``d=base64url(nonce ‖ seal)``, where ``seal`` is XChaCha20-Poly1305 of
``feed ‖ port`` under a key derived from the network key, with the instance label as associated
data (§3). A peer of the same network opens it and learns whom to expect at that address; a peer
of another network (or anyone without the key) sees random bytes, and its open fails without
any connection attempt (``other-network``).

Invariants:
- Pure: the nonce and instance label are arguments; nothing here draws randomness or reads a
  clock. The shell (feedlog/lan.py) draws both once per run.
- Every length is checked before it is used; every rejection is a DiscoveryError with a stable
  code from spec/discovery.md §5.
- ``should_dial`` is antisymmetric: for two distinct feeds exactly one side dials, and a node
  never dials itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from feedlog.core.errors import LocalError, RemoteError
from feedlog.core.ids import ID_SIZE, FeedId

SERVICE_TYPE = "_feedlog._tcp.local."
VERSION = b"1"
KEY_TAG = b"feedlog/discovery-key/v1\x00"
AD_TAG = b"feedlog/discovery/v1\x00"
NETWORK_KEY_SIZE = 32
NONCE_SIZE = 24  # XChaCha20-Poly1305-IETF
TAG_SIZE = 16
PLAIN_SIZE = ID_SIZE + 2  # feed ‖ port (big-endian u16)
BLOB_SIZE = NONCE_SIZE + PLAIN_SIZE + TAG_SIZE  # 74 bytes
LABEL_RANDOM_SIZE = 10  # 80 bits -> 16 base32 characters
LABEL_PREFIX = "fl-"
MAX_LABEL_BYTES = 63  # one DNS label


class DiscoveryError(RemoteError):
    """An announcement was rejected; ``code`` says why (spec/discovery.md §5)."""

    code = "bad-discovery-record"


@dataclass(frozen=True, slots=True)
class Announcement:
    """What an opened record says: the server's feed id and listening port."""

    feed: FeedId
    port: int


def discovery_key(network_key: bytes) -> bytes:
    """K_d = HMAC-SHA-256(N, KEY_TAG): the record key, never the handshake key itself."""
    if len(network_key) != NETWORK_KEY_SIZE:
        raise LocalError(f"a network key is {NETWORK_KEY_SIZE} bytes, not {len(network_key)}",
                         code="bad-network-key-size")
    return hmac.new(network_key, KEY_TAG, hashlib.sha256).digest()


def instance_label(random_bytes: bytes) -> str:
    """The per-run instance label: ``fl-`` and 16 base32 characters of 10 random bytes."""
    if len(random_bytes) != LABEL_RANDOM_SIZE:
        raise LocalError(f"an instance label takes {LABEL_RANDOM_SIZE} random bytes",
                         code="bad-label-seed")
    return LABEL_PREFIX + base64.b32encode(random_bytes).decode("ascii").lower()


def instance_name(label: str) -> str:
    """The full DNS-SD service instance name of ``label``."""
    return f"{label}.{SERVICE_TYPE}"


def label_of(name: str) -> str | None:
    """The instance label of a full service name of our type, or None for another type."""
    suffix = "." + SERVICE_TYPE
    if not name.lower().endswith(suffix.lower()) or len(name) <= len(suffix):
        return None
    return name[: -len(suffix)]


def _ad(label: str) -> bytes:
    raw = label.encode("utf-8")
    if not 1 <= len(raw) <= MAX_LABEL_BYTES:
        raise DiscoveryError("instance label must be 1 to 63 bytes", code="bad-discovery-record")
    return AD_TAG + raw


def encode_record(network_key: bytes, label: str, feed: FeedId, port: int,
                  nonce: bytes) -> dict[str, str]:
    """The TXT record (key -> value) announcing ``feed`` listening on ``port``.

    ``nonce`` must be 24 fresh random bytes, drawn once per run (spec/discovery.md §3).
    """
    if len(feed) != ID_SIZE:
        raise LocalError("a feed id is 32 bytes", code="bad-id")
    if not 1 <= port <= 0xFFFF:
        raise LocalError(f"port {port} is out of range", code="bad-port")
    if len(nonce) != NONCE_SIZE:
        raise LocalError(f"the record nonce is {NONCE_SIZE} bytes", code="bad-nonce")
    plain = bytes(feed) + port.to_bytes(2, "big")
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _ad(label), nonce, discovery_key(network_key))
    blob = nonce + sealed
    return {"v": VERSION.decode(), "d": base64.urlsafe_b64encode(blob).decode().rstrip("=")}


def _text(v: bytes | str | None) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    return v.encode("utf-8")


def decode_record(network_key: bytes, label: str,
                  txt: Mapping[bytes, bytes | None] | Mapping[str, str | None],
                  srv_port: int) -> Announcement:
    """Open a TXT record found under instance ``label`` whose SRV record gives ``srv_port``.

    Raises DiscoveryError: ``discovery-version`` (a version this code does not know),
    ``bad-discovery-record`` (missing field, bad base64, wrong length), ``other-network`` (does
    not authenticate: another network key or a tampered record), ``discovery-port-mismatch``
    (the sealed port is not the SRV port: the record was copied to another service).
    """
    fields = {(k.encode() if isinstance(k, str) else k).lower(): _text(v)
              for k, v in txt.items()}
    version = fields.get(b"v")
    if version is None:
        raise DiscoveryError("no version field", code="bad-discovery-record")
    if version != VERSION:
        raise DiscoveryError(f"unknown record version {version[:8]!r}", code="discovery-version")
    data = fields.get(b"d")
    if data is None:
        raise DiscoveryError("no data field", code="bad-discovery-record")
    expected_chars = (BLOB_SIZE * 4 + 2) // 3  # unpadded base64 of 74 bytes: 99 characters
    if len(data) != expected_chars:
        raise DiscoveryError(f"data field is {len(data)} characters, not {expected_chars}",
                             code="bad-discovery-record")
    try:
        blob = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise DiscoveryError("data field is not base64url", code="bad-discovery-record") from None
    if len(blob) != BLOB_SIZE or base64.urlsafe_b64encode(blob).rstrip(b"=") != data:
        raise DiscoveryError("data field is not canonical base64url",
                             code="bad-discovery-record")
    nonce, sealed = blob[:NONCE_SIZE], blob[NONCE_SIZE:]
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed, _ad(label), nonce, discovery_key(network_key))
    except nacl.exceptions.CryptoError:
        raise DiscoveryError("record does not open with our network key",
                             code="other-network") from None
    feed = FeedId(plain[:ID_SIZE])
    port = int.from_bytes(plain[ID_SIZE:], "big")
    if port != srv_port:
        raise DiscoveryError(f"sealed port {port} differs from the advertised {srv_port}",
                             code="discovery-port-mismatch")
    return Announcement(feed, port)


def should_dial(own: bytes, peer: bytes) -> bool:
    """The dial rule (§4): the side with the bytewise smaller feed id connects; never to itself."""
    return bytes(own) < bytes(peer)


def backoff_delay(failures: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` consecutive failed or ended connections (§4).

    Exponential (``base * 2**(failures-1)``), capped at ``cap``, then scaled into
    ``[d/2, d)`` by ``jitter`` in ``[0, 1)`` (drawn by the caller), so two peers that lost each
    other at the same moment do not retry in lockstep.
    """
    if failures <= 0:
        return 0.0
    if not 0.0 <= jitter < 1.0:
        raise LocalError("jitter must be in [0, 1)", code="bad-jitter")
    d = min(cap, base * (2.0 ** min(failures - 1, 62)))
    return d * (0.5 + 0.5 * jitter)

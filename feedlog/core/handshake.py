"""Secret Handshake v1 as two sans-IO state machines (spec/replication.md §2).

How this works: a handshake object is fed the bytes that arrived (``receive_data``) and is asked
for the bytes to write (``data_to_send``). It never reads a socket, a clock or a random source:
the ephemeral key comes from ``ephemeral_seed``, a constructor argument.

    client                                        server
    msg1 = hmac(N, a_pub) || a_pub       64 ->
                                         <- 64    msg2 = hmac(N, b_pub) || b_pub
    msg3 = box(sigA || A, key2)         112 ->
                                         <- 80    msg4 = box(sigB, key3)

Invariants:
- Messages have fixed sizes, so the object always knows how many bytes it still needs
  (``bytes_needed``); a driver can read exactly that much and never swallow box-stream bytes.
  Bytes beyond the last handshake message are kept for ``leftover()``.
- Each message is checked completely (mac, then box, then signature, then the authorize
  callback) before anything is sent in reply.
- The first failure kills the object: pending output is dropped, ``data_to_send`` returns b""
  forever and every other call raises the same error again. The handshake sends nothing after
  a failure, so a peer learns nothing from a wrong guess.

Driving it from a shell (either role):

    write(hs.data_to_send())
    while not hs.done:
        hs.receive_data(read_up_to(hs.bytes_needed()))   # b"" at EOF
        write(hs.data_to_send())                         # the server's msg4 comes out here
    keys, early = hs.result, hs.leftover()               # early bytes go to the box-stream
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import nacl.bindings
import nacl.exceptions

from feedlog.core.crypto import Keypair, curve25519_public, sha256, verify_raw
from feedlog.core.errors import HandshakeError, LocalError

KEY_SIZE = 32
MAC_SIZE = 32
SIGNATURE_SIZE = 64
BOX_TAG_SIZE = 16
NONCE_SIZE = 24

MSG1_SIZE = MAC_SIZE + KEY_SIZE  # client hello: 64
MSG2_SIZE = MAC_SIZE + KEY_SIZE  # server hello: 64
MSG3_SIZE = BOX_TAG_SIZE + SIGNATURE_SIZE + KEY_SIZE  # client auth: 112
MSG4_SIZE = BOX_TAG_SIZE + SIGNATURE_SIZE  # server accept: 80

_ZERO_NONCE = bytes(NONCE_SIZE)

Authorize = Callable[[bytes], bool]


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """What a finished handshake yields: the peer's identity and the box-stream parameters.

    ``encrypt_*`` seal what this side sends; ``decrypt_*`` open what the peer sends.
    """

    remote_public: bytes
    encrypt_key: bytes = field(repr=False)
    encrypt_nonce: bytes
    decrypt_key: bytes = field(repr=False)
    decrypt_nonce: bytes


def _mac(key: bytes, data: bytes) -> bytes:
    # libsodium's crypto_auth: HMAC-SHA-512 truncated to 32 bytes.
    return hmac.new(key, data, hashlib.sha512).digest()[:MAC_SIZE]


def _ephemeral(seed: bytes) -> tuple[bytes, bytes]:
    """(secret, public) Curve25519 pair derived from an Ed25519 seed key pair, as SHS1 does."""
    _, ed_secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    secret = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(ed_secret)
    return secret, nacl.bindings.crypto_scalarmult_base(secret)


def _auth_failed(message: str) -> HandshakeError:
    return HandshakeError(message, code="handshake-auth-failed")


def _dh(secret: bytes, public: bytes) -> bytes:
    """X25519; an all-zero result (low-order or zero peer key) is an authentication failure."""
    try:
        return nacl.bindings.crypto_scalarmult(secret, public)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise _auth_failed("key exchange failed (low-order or invalid key)") from exc


def _to_curve(ed_public: bytes) -> bytes:
    try:
        return curve25519_public(ed_public)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise _auth_failed("long-term key is not a valid Ed25519 point") from exc


def _open_box(box: bytes, key: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_secretbox_open(box, _ZERO_NONCE, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise _auth_failed("handshake box does not open") from exc


def _check_size(name: str, value: bytes, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise LocalError(f"{name} must be {size} bytes", code="bad-key")
    return bytes(value)


class _Handshake:
    """Buffering, size bookkeeping and the dead-after-failure rule shared by both roles."""

    def __init__(self, network_key: bytes, keypair: Keypair, ephemeral_seed: bytes) -> None:
        self._network_key = _check_size("network key", network_key, KEY_SIZE)
        self._keypair = keypair
        self._eph_secret, self._eph_public = _ephemeral(
            _check_size("ephemeral seed", ephemeral_seed, KEY_SIZE)
        )
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._leftover = b""
        self._need = 0  # size of the message being waited for; 0 once done
        self._result: SessionKeys | None = None
        self._error: HandshakeError | None = None

    # -- public surface ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the handshake succeeded (flush ``data_to_send`` once more after that)."""
        return self._result is not None

    @property
    def error(self) -> HandshakeError | None:
        """The failure that killed this handshake, if any."""
        return self._error

    @property
    def result(self) -> SessionKeys:
        """The session keys; raises unless ``done``."""
        self._raise_if_dead()
        if self._result is None:
            raise LocalError("the handshake is not finished", code="handshake-incomplete")
        return self._result

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (b"" if none, and always b"" after a failure)."""
        if self._error is not None:
            return b""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def bytes_needed(self) -> int:
        """How many more bytes the handshake must read; 0 once done.

        Reading exactly this many bytes never consumes box-stream data.
        """
        self._raise_if_dead()
        if self._result is not None:
            return 0
        return self._need - len(self._inbox)

    def leftover(self) -> bytes:
        """Take the bytes that arrived after the last handshake message (box-stream data).

        Returns them once and then b""; returns b"" until the handshake is done.
        """
        self._raise_if_dead()
        out, self._leftover = self._leftover, b""
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer in chunks of any size; b"" means the peer closed."""
        self._raise_if_dead()
        if self._result is not None:
            raise LocalError(
                "the handshake is finished; feed the box-stream reader instead",
                code="handshake-complete",
            )
        if not data:
            self._die(HandshakeError("peer closed during the handshake" + self._eof_hint(),
                                     code="handshake-eof"))
        self._inbox += data
        while self._result is None and len(self._inbox) >= self._need:
            message = bytes(self._inbox[: self._need])
            del self._inbox[: self._need]
            try:
                self._on_message(message)
            except HandshakeError as exc:
                self._die(exc)
        if self._result is not None:
            self._leftover = bytes(self._inbox)
            self._inbox.clear()

    # -- for the roles -----------------------------------------------------------------------

    def _on_message(self, message: bytes) -> None:
        raise NotImplementedError

    def _eof_hint(self) -> str:
        """Why the peer may have hung up at this step (a server says nothing when it refuses)."""
        return ""

    def _hello(self) -> bytes:
        return _mac(self._network_key, self._eph_public) + self._eph_public

    def _read_hello(self, message: bytes) -> bytes:
        """Check a msg1/msg2 and return the peer's ephemeral public key."""
        mac, remote_eph = message[:MAC_SIZE], message[MAC_SIZE:]
        if not hmac.compare_digest(mac, _mac(self._network_key, remote_eph)):
            raise HandshakeError("peer is on another network, or does not speak feedlog "
                                 "at all", code="bad-network-key")
        return remote_eph

    def _finish(
        self, secret3: bytes, remote_public: bytes, remote_hello_mac: bytes, own_hello_mac: bytes
    ) -> None:
        session = sha256(secret3)
        self._result = SessionKeys(
            remote_public=remote_public,
            encrypt_key=sha256(session, remote_public),
            encrypt_nonce=remote_hello_mac[:NONCE_SIZE],
            decrypt_key=sha256(session, self._keypair.public),
            decrypt_nonce=own_hello_mac[:NONCE_SIZE],
        )
        self._need = 0

    def _mark_dead(self, error: HandshakeError) -> None:
        self._error = error
        self._outbox.clear()
        self._inbox.clear()
        self._leftover = b""

    def _die(self, error: HandshakeError) -> NoReturn:
        self._mark_dead(error)
        raise error

    def _raise_if_dead(self) -> None:
        if self._error is not None:
            raise HandshakeError(
                f"handshake already failed: {self._error.message}", code=self._error.code
            )


class ClientHandshake(_Handshake):
    """The connecting side. It must know the server's long-term public key in advance.

    msg1 is ready in ``data_to_send()`` right after construction.
    """

    def __init__(
        self,
        network_key: bytes,
        keypair: Keypair,
        server_public: bytes,
        ephemeral_seed: bytes,
    ) -> None:
        super().__init__(network_key, keypair, ephemeral_seed)
        self._server_public = _check_size("server public key", server_public, KEY_SIZE)
        try:
            self._server_curve = curve25519_public(self._server_public)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise LocalError("server public key is not an Ed25519 key", code="bad-key") from exc
        self._msg1 = self._hello()
        self._outbox += self._msg1
        self._need = MSG2_SIZE
        self._step = 2
        self._msg2 = b""
        self._ab = self._a_b = self._secret3 = self._sig_a = b""

    def _on_message(self, message: bytes) -> None:
        if self._step == 2:
            self._on_msg2(message)
        else:
            self._on_msg4(message)

    def _eof_hint(self) -> str:
        if self._step == 2:  # it could not read our hello: another network key
            return (": it is probably on another network (check --network-key / "
                    "FEEDLOG_NETWORK_KEY on both sides)")
        # it read our hello but not our proof: we dialled a key it is not, or it refuses us
        return (": it is not the feed id of the address, or it does not accept us (blocked, "
                "or it is busy)")

    def _on_msg2(self, msg2: bytes) -> None:
        server_eph = self._read_hello(msg2)
        self._msg2 = msg2
        ab = _dh(self._eph_secret, server_eph)
        a_b = _dh(self._eph_secret, self._server_curve)
        a_own_b = _dh(self._keypair.curve25519_secret(), server_eph)
        n = self._network_key
        self._sig_a = self._keypair.sign_raw(n + self._server_public + sha256(ab))
        key2 = sha256(n, ab, a_b)
        box = nacl.bindings.crypto_secretbox(self._sig_a + self._keypair.public, _ZERO_NONCE, key2)
        self._ab, self._a_b = ab, a_b
        self._secret3 = sha256(n, ab, a_b, a_own_b)
        self._outbox += box
        self._need = MSG4_SIZE
        self._step = 4

    def _on_msg4(self, msg4: bytes) -> None:
        sig_b = _open_box(msg4, self._secret3)
        signed = self._network_key + self._sig_a + self._keypair.public + sha256(self._ab)
        if not verify_raw(self._server_public, signed, sig_b):
            raise _auth_failed("server signature does not verify")
        self._finish(self._secret3, self._server_public, self._msg2[:MAC_SIZE], self._msg1)


class ServerHandshake(_Handshake):
    """The accepting side. It learns the client's identity from msg3.

    ``authorize(client_public)`` is called once the client has proved its identity and before
    msg4 is sent; returning False fails the handshake with ``peer-rejected``. Without a
    callback every client on the network is accepted.
    """

    def __init__(
        self,
        network_key: bytes,
        keypair: Keypair,
        ephemeral_seed: bytes,
        authorize: Authorize | None = None,
    ) -> None:
        super().__init__(network_key, keypair, ephemeral_seed)
        self._authorize = authorize
        self._need = MSG1_SIZE
        self._step = 1
        self._msg1 = self._msg2 = b""
        self._ab = self._a_b = b""

    def _on_message(self, message: bytes) -> None:
        if self._step == 1:
            self._on_msg1(message)
        else:
            self._on_msg3(message)

    def _on_msg1(self, msg1: bytes) -> None:
        client_eph = self._read_hello(msg1)
        self._msg1 = msg1
        self._ab = _dh(self._eph_secret, client_eph)
        self._a_b = _dh(self._keypair.curve25519_secret(), client_eph)
        self._msg2 = self._hello()
        self._outbox += self._msg2
        self._need = MSG3_SIZE
        self._step = 3

    def _on_msg3(self, msg3: bytes) -> None:
        n = self._network_key
        plain = _open_box(msg3, sha256(n, self._ab, self._a_b))
        sig_a, client_public = plain[:SIGNATURE_SIZE], plain[SIGNATURE_SIZE:]
        shash = sha256(self._ab)
        if not verify_raw(client_public, n + self._keypair.public + shash, sig_a):
            raise _auth_failed("client signature does not verify")
        a_own_b = _dh(self._eph_secret, _to_curve(client_public))
        if self._authorize is not None:
            try:
                accepted = self._authorize(client_public)
            except Exception:
                # The callback's own error propagates; the handshake is dead all the same.
                self._mark_dead(HandshakeError("authorize callback raised", code="peer-rejected"))
                raise
            if not accepted:
                raise HandshakeError("client refused by authorize", code="peer-rejected")
        secret3 = sha256(n, self._ab, self._a_b, a_own_b)
        sig_b = self._keypair.sign_raw(n + sig_a + client_public + shash)
        self._outbox += nacl.bindings.crypto_secretbox(sig_b, _ZERO_NONCE, secret3)
        self._finish(secret3, client_public, self._msg1[:MAC_SIZE], self._msg2)

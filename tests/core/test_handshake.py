"""Secret Handshake v1 (spec/replication.md §2): vectors in both roles, and hostile input.

Vectors are read in place from ../shared/vectors/shs1-test-secret-handshake/ (the sibling of
the repository root). Only the vector tests skip, and only when that folder is missing.

data.json quirk (see its SOURCE.md): each record's ``args[0]`` was stored after the call, so
it already holds the post-call state. The tests rebuild a handshake object from the long-term
key, network key and ephemeral seed in that state and replay the peer messages the state
records (msg1/msg2 are ``remote.app_mac || remote.kx_pk``; msg3/msg4 come from the matching
clientCreateAuth/serverCreateAccept record, paired by ephemeral keys).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedlog.core.boxstream import BoxStreamReader, BoxStreamWriter
from feedlog.core.crypto import Keypair, sha256
from feedlog.core.errors import HandshakeError, LocalError
from feedlog.core.handshake import (
    MSG1_SIZE,
    MSG2_SIZE,
    MSG3_SIZE,
    MSG4_SIZE,
    ClientHandshake,
    ServerHandshake,
    SessionKeys,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SHS_DIR = SHARED / "vectors" / "shs1-test-secret-handshake"
MISSING = f"shared vectors folder not found: {SHARED}"

Record = dict[str, Any]


def _load(name: str) -> list[Record]:
    data: list[Record] = json.loads((SHS_DIR / name).read_text())
    return data


def _params(items: list[Record], ids: list[str]) -> list[Any]:
    if not SHARED.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))]
    return [pytest.param(item, id=i) for item, i in zip(items, ids, strict=True)]


TRANSCRIPTS: list[Record] = _load("transcripts.derived.json") if SHARED.is_dir() else []
RECORDS: list[Record] = _load("data.json") if SHARED.is_dir() else []


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def keypair_from_sk64(secret64_hex: str) -> Keypair:
    kp = Keypair.from_seed(h(secret64_hex)[:32])
    assert kp.secret64 == h(secret64_hex)
    return kp


def fail_code(exc: pytest.ExceptionInfo[HandshakeError]) -> str:
    return exc.value.code


# -- fixed identities for the non-vector tests ----------------------------------------------

NET = bytes(range(32))
OTHER_NET = bytes(range(1, 33))
CLIENT = Keypair.from_seed(b"\x01" * 32)
SERVER = Keypair.from_seed(b"\x02" * 32)
STRANGER = Keypair.from_seed(b"\x03" * 32)
C_EPH = b"\x11" * 32
S_EPH = b"\x22" * 32


def client(net: bytes = NET, server_public: bytes = SERVER.public) -> ClientHandshake:
    return ClientHandshake(net, CLIENT, server_public, C_EPH)


def server(net: bytes = NET, **kwargs: Any) -> ServerHandshake:
    return ServerHandshake(net, SERVER, S_EPH, **kwargs)


def run(c: ClientHandshake, s: ServerHandshake) -> tuple[SessionKeys, SessionKeys]:
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    assert c.done and s.done
    return c.result, s.result


def assert_dead(hs: ClientHandshake | ServerHandshake, code: str) -> None:
    """A failed handshake sends nothing more and every later call raises the same code."""
    assert not hs.done
    assert hs.error is not None and hs.error.code == code
    assert hs.data_to_send() == b""
    for call in (lambda: hs.receive_data(b"x"), hs.bytes_needed, hs.leftover, lambda: hs.result):
        with pytest.raises(HandshakeError) as exc:
            call()
        assert exc.value.code == code
    assert hs.data_to_send() == b""


# -- complete transcripts, both roles -------------------------------------------------------


def _transcript_ids() -> list[str]:
    return [f"transcript{i}" for i in range(len(TRANSCRIPTS))]


@pytest.mark.parametrize("t", _params(TRANSCRIPTS, _transcript_ids()))
def test_transcript_client_role(t: Record) -> None:
    c = ClientHandshake(
        h(t["network_key"]),
        keypair_from_sk64(t["client_longterm_sk"]),
        h(t["server_longterm_pk"]),
        h(t["client_ephemeral_seed"]),
    )
    assert c.bytes_needed() == MSG2_SIZE
    assert c.data_to_send() == h(t["msg1"])
    assert c.data_to_send() == b""
    c.receive_data(h(t["msg2"]))
    assert c.data_to_send() == h(t["msg3"])
    assert c.bytes_needed() == MSG4_SIZE
    assert not c.done
    c.receive_data(h(t["msg4"]))
    assert c.done and c.bytes_needed() == 0
    assert c.data_to_send() == b""
    assert c.result == SessionKeys(
        remote_public=h(t["server_longterm_pk"]),
        encrypt_key=h(t["client_to_server_key"]),
        encrypt_nonce=h(t["client_to_server_nonce"]),
        decrypt_key=h(t["server_to_client_key"]),
        decrypt_nonce=h(t["server_to_client_nonce"]),
    )


@pytest.mark.parametrize("t", _params(TRANSCRIPTS, _transcript_ids()))
def test_transcript_server_role(t: Record) -> None:
    seen: list[bytes] = []

    def authorize(public: bytes) -> bool:
        seen.append(public)
        return True

    s = ServerHandshake(
        h(t["network_key"]),
        keypair_from_sk64(t["server_longterm_sk"]),
        h(t["server_ephemeral_seed"]),
        authorize,
    )
    assert s.data_to_send() == b""
    assert s.bytes_needed() == MSG1_SIZE
    s.receive_data(h(t["msg1"]))
    assert s.data_to_send() == h(t["msg2"])
    assert s.bytes_needed() == MSG3_SIZE
    assert seen == []
    s.receive_data(h(t["msg3"]))
    assert seen == [h(t["client_longterm_pk"])]
    assert s.done and s.bytes_needed() == 0
    assert s.data_to_send() == h(t["msg4"])
    assert s.result == SessionKeys(
        remote_public=h(t["client_longterm_pk"]),
        encrypt_key=h(t["server_to_client_key"]),
        encrypt_nonce=h(t["server_to_client_nonce"]),
        decrypt_key=h(t["client_to_server_key"]),
        decrypt_nonce=h(t["client_to_server_nonce"]),
    )


@pytest.mark.parametrize("t", _params(TRANSCRIPTS, _transcript_ids()))
def test_transcript_key_schedule_cross_check(t: Record) -> None:
    """Derive the transcript's keys from its shared secrets, independently of the module."""
    n = h(t["network_key"])
    ab, a_b, a_own_b = h(t["shared_secret_ab"]), h(t["shared_secret_aB"]), h(t["shared_secret_Ab"])
    assert (
        nacl.bindings.crypto_scalarmult(h(t["client_ephemeral_sk"]), h(t["server_ephemeral_pk"]))
        == ab
    )
    session = sha256(sha256(n, ab, a_b, a_own_b))
    assert sha256(session, h(t["server_longterm_pk"])) == h(t["client_to_server_key"])
    assert sha256(session, h(t["client_longterm_pk"])) == h(t["server_to_client_key"])
    plain = nacl.bindings.crypto_secretbox_open(h(t["msg3"]), bytes(24), sha256(n, ab, a_b))
    assert plain[64:] == h(t["client_longterm_pk"])


@pytest.mark.parametrize("t", _params(TRANSCRIPTS, _transcript_ids()))
def test_transcript_one_byte_at_a_time(t: Record) -> None:
    c = ClientHandshake(
        h(t["network_key"]),
        keypair_from_sk64(t["client_longterm_sk"]),
        h(t["server_longterm_pk"]),
        h(t["client_ephemeral_seed"]),
    )
    s = ServerHandshake(
        h(t["network_key"]),
        keypair_from_sk64(t["server_longterm_sk"]),
        h(t["server_ephemeral_seed"]),
    )
    wire = {"c": b"", "s": b""}
    while not (c.done and s.done):
        wire["c"] += c.data_to_send()
        wire["s"] += s.data_to_send()
        for hs, key in ((s, "c"), (c, "s")):
            if wire[key] and not hs.done:
                hs.receive_data(wire[key][:1])
                wire[key] = wire[key][1:]
    wire["s"] += s.data_to_send()
    assert wire == {"c": b"", "s": b""}
    assert c.result.encrypt_key == s.result.decrypt_key == h(t["client_to_server_key"])
    assert c.result.decrypt_key == s.result.encrypt_key == h(t["server_to_client_key"])


# -- every per-step record of data.json ------------------------------------------------------


def _pair_key(client_kx: str, server_kx: str) -> tuple[str, str]:
    return (client_kx, server_kx)


MSG3_BY_PAIR: dict[tuple[str, str], bytes] = {}
MSG4_BY_PAIR: dict[tuple[str, str], bytes] = {}
for _r in RECORDS:
    if _r["name"] == "clientCreateAuth":
        _st = _r["args"][0]
        MSG3_BY_PAIR[_pair_key(_st["local"]["kx_pk"], _st["remote"]["kx_pk"])] = h(_r["result"])
    elif _r["name"] == "serverCreateAccept":
        _st = _r["args"][0]
        MSG4_BY_PAIR[_pair_key(_st["remote"]["kx_pk"], _st["local"]["kx_pk"])] = h(_r["result"])


def _client_of(state: Record) -> ClientHandshake:
    return ClientHandshake(
        h(state["app_key"]),
        keypair_from_sk64(state["local"]["secretKey"]),
        h(state["remote"]["publicKey"]),
        h(state["random"]),
    )


def _server_of(state: Record, authorize: Callable[[bytes], bool] | None = None) -> ServerHandshake:
    return ServerHandshake(
        h(state["app_key"]),
        keypair_from_sk64(state["local"]["secretKey"]),
        h(state["random"]),
        authorize,
    )


def _hello_of(side: Record) -> bytes:
    return h(side["app_mac"]) + h(side["kx_pk"])


def _is_client(state: Record) -> bool:
    # The client knows the server's long-term key from the start; the server only learns the
    # client's from msg3 (and then also holds remote.hello).
    return "publicKey" in state["remote"] and "hello" not in state["remote"]


def _check_initialize(rec: Record) -> None:
    state = rec["result"]
    kp = keypair_from_sk64(state["local"]["secretKey"])
    assert kp.public == h(state["local"]["publicKey"])
    if state.get("seed"):
        assert Keypair.from_seed(h(state["seed"])).public == kp.public
    # msg1 does not depend on the role: any valid peer key will do for building a client.
    peer = h(state["remote"].get("publicKey", state["local"]["publicKey"]))
    c = ClientHandshake(h(state["app_key"]), kp, peer, h(state["random"]))
    assert c.data_to_send() == _hello_of(state["local"])


def _check_create_challenge(rec: Record) -> None:
    state = rec["args"][0]
    if _is_client(state):
        assert _client_of(state).data_to_send() == h(rec["result"])
    else:
        s = _server_of(state)
        s.receive_data(_hello_of(state["remote"]))
        assert s.data_to_send() == h(rec["result"])


def _check_verify_challenge(rec: Record) -> None:
    state, msg = rec["args"][0], h(rec["args"][1])
    hs: ClientHandshake | ServerHandshake
    if _is_client(state):
        hs = _client_of(state)
        hs.data_to_send()
    else:
        hs = _server_of(state)
    if rec["result"] is None:
        with pytest.raises(HandshakeError) as exc:
            hs.receive_data(msg)
        assert fail_code(exc) == "bad-network-key"
        assert_dead(hs, "bad-network-key")
        return
    hs.receive_data(msg)
    out = hs.data_to_send()
    if isinstance(hs, ClientHandshake):
        assert len(out) == MSG3_SIZE and hs.bytes_needed() == MSG4_SIZE
    else:
        assert out == _hello_of(rec["result"]["local"]) and hs.bytes_needed() == MSG3_SIZE


def _check_client_verify_challenge(rec: Record) -> None:
    _check_verify_challenge(rec)
    state = rec["args"][0]
    if rec["result"] is not None:
        c = _client_of(state)
        c.data_to_send()
        c.receive_data(h(rec["args"][1]))
        pair = _pair_key(state["local"]["kx_pk"], state["remote"]["kx_pk"])
        assert c.data_to_send() == MSG3_BY_PAIR[pair]


def _check_client_create_auth(rec: Record) -> None:
    state = rec["args"][0]
    c = _client_of(state)
    assert c.data_to_send() == _hello_of(state["local"])
    c.receive_data(_hello_of(state["remote"]))
    assert c.data_to_send() == h(rec["result"])


def _check_server_verify_auth(rec: Record) -> None:
    state, msg3 = rec["args"][0], h(rec["args"][1])
    seen: list[bytes] = []

    def authorize(public: bytes) -> bool:
        seen.append(public)
        return True

    s = _server_of(state, authorize)
    s.receive_data(_hello_of(state["remote"]))
    assert s.data_to_send() == _hello_of(state["local"])
    if rec["result"] is None:
        with pytest.raises(HandshakeError) as exc:
            s.receive_data(msg3)
        assert fail_code(exc) == "handshake-auth-failed"
        assert seen == []
        assert_dead(s, "handshake-auth-failed")
        return
    s.receive_data(msg3)
    client_public = h(rec["result"]["remote"]["publicKey"])
    assert seen == [client_public]
    assert s.done and s.result.remote_public == client_public
    assert len(s.data_to_send()) == MSG4_SIZE


def _check_server_create_accept(rec: Record) -> None:
    state = rec["args"][0]
    s = _server_of(state)
    s.receive_data(_hello_of(state["remote"]))
    s.receive_data(MSG3_BY_PAIR[_pair_key(state["remote"]["kx_pk"], state["local"]["kx_pk"])])
    assert s.data_to_send() == _hello_of(state["local"]) + h(rec["result"])


def _check_client_verify_accept(rec: Record) -> None:
    state, msg4 = rec["args"][0], h(rec["args"][1])
    c = _client_of(state)
    c.receive_data(_hello_of(state["remote"]))
    c.receive_data(msg4)
    assert c.done and c.result.remote_public == h(state["remote"]["publicKey"])


def _check_clean(rec: Record) -> None:
    state = rec["result"]
    hs: ClientHandshake | ServerHandshake
    if _is_client(state):
        hs = _client_of(state)
        hs.receive_data(_hello_of(state["remote"]))
        hs.receive_data(MSG4_BY_PAIR[_pair_key(state["local"]["kx_pk"], state["remote"]["kx_pk"])])
    else:
        hs = _server_of(state)
        hs.receive_data(_hello_of(state["remote"]))
        hs.receive_data(MSG3_BY_PAIR[_pair_key(state["remote"]["kx_pk"], state["local"]["kx_pk"])])
    assert hs.result == SessionKeys(
        remote_public=h(state["remote"]["publicKey"]),
        encrypt_key=h(state["encryptKey"]),
        encrypt_nonce=h(state["remote"]["app_mac"])[:24],
        decrypt_key=h(state["decryptKey"]),
        decrypt_nonce=h(state["local"]["app_mac"])[:24],
    )


def _check_to_keys(rec: Record) -> None:
    arg = rec["args"][0]
    seed = h(arg)[:32] if isinstance(arg, str) else h(arg["secretKey"])[:32]
    kp = Keypair.from_seed(seed)
    assert kp.public == h(rec["result"]["publicKey"])
    assert kp.secret64 == h(rec["result"]["secretKey"])


CHECKS = {
    "initialize": _check_initialize,
    "createChallenge": _check_create_challenge,
    "verifyChallenge": _check_verify_challenge,
    "clientVerifyChallenge": _check_client_verify_challenge,
    "clientCreateAuth": _check_client_create_auth,
    "serverVerifyAuth": _check_server_verify_auth,
    "serverCreateAccept": _check_server_create_accept,
    "clientVerifyAccept": _check_client_verify_accept,
    "clean": _check_clean,
    "toKeys": _check_to_keys,
}


def _record_ids() -> list[str]:
    return [
        f"{i:03d}-{r['name']}-{'reject' if r['result'] is None else 'ok'}"
        for i, r in enumerate(RECORDS)
    ]


@pytest.mark.parametrize("rec", _params(RECORDS, _record_ids()))
def test_data_json_record(rec: Record) -> None:
    CHECKS[rec["name"]](rec)


@pytest.mark.skipif(not SHARED.is_dir(), reason=MISSING)
def test_data_json_has_the_documented_shape() -> None:
    assert len(RECORDS) == 159
    rejections = sorted(r["name"] for r in RECORDS if r["result"] is None)
    assert (
        rejections == ["clientVerifyChallenge"] * 2 + ["serverVerifyAuth"] + ["verifyChallenge"] * 4
    )
    assert set(r["name"] for r in RECORDS) == set(CHECKS)
    assert len(MSG3_BY_PAIR) == 12 and len(MSG4_BY_PAIR) == 6


# -- behaviour beyond the vectors ------------------------------------------------------------


def test_session_keys_drive_box_streams_both_ways() -> None:
    ck, sk = run(client(), server())
    assert ck.remote_public == SERVER.public and sk.remote_public == CLIENT.public
    up = BoxStreamWriter(ck.encrypt_key, ck.encrypt_nonce)
    down = BoxStreamReader(sk.decrypt_key, sk.decrypt_nonce)
    down.receive_data(up.seal(b"hello server"))
    assert down.next_chunks() == [b"hello server"]
    back = BoxStreamWriter(sk.encrypt_key, sk.encrypt_nonce)
    reader = BoxStreamReader(ck.decrypt_key, ck.decrypt_nonce)
    reader.receive_data(back.seal(b"hello client") + back.goodbye())
    assert reader.next_chunks() == [b"hello client"] and reader.closed


def test_leftover_bytes_are_handed_on() -> None:
    c, s = client(), server()
    s.receive_data(c.data_to_send())
    msg2 = s.data_to_send()
    c.receive_data(msg2)
    s.receive_data(c.data_to_send() + b"early box-stream bytes")
    assert s.done and s.leftover() == b"early box-stream bytes"
    assert s.leftover() == b""
    c.receive_data(s.data_to_send() + b"tail")
    assert c.done and c.leftover() == b"tail"
    with pytest.raises(LocalError):
        c.receive_data(b"more")


def test_server_handles_msg1_and_msg3_in_one_call() -> None:
    c, s = client(), server()
    msg1 = c.data_to_send()
    probe = server()
    probe.receive_data(msg1)
    c.receive_data(probe.data_to_send())  # same server seed, so the same msg2
    s.receive_data(msg1 + c.data_to_send())
    assert s.done
    out = s.data_to_send()
    assert len(out) == MSG2_SIZE + MSG4_SIZE
    c.receive_data(out[MSG2_SIZE:])
    assert c.done and c.result.encrypt_key == s.result.decrypt_key


def test_bytes_needed_counts_down() -> None:
    s = server()
    msg1 = client().data_to_send()
    s.receive_data(msg1[:10])
    assert s.bytes_needed() == MSG1_SIZE - 10
    assert s.data_to_send() == b""
    s.receive_data(msg1[10:])
    assert s.bytes_needed() == MSG3_SIZE


def test_result_before_done_is_a_local_error() -> None:
    with pytest.raises(LocalError) as exc:
        _ = client().result
    assert exc.value.code == "handshake-incomplete"


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClientHandshake(NET[:31], CLIENT, SERVER.public, C_EPH),
        lambda: ClientHandshake(NET, CLIENT, SERVER.public[:31], C_EPH),
        lambda: ClientHandshake(NET, CLIENT, b"\xff" * 32, C_EPH),
        lambda: ClientHandshake(NET, CLIENT, SERVER.public, C_EPH[:16]),
        lambda: ServerHandshake(NET, SERVER, b""),
    ],
)
def test_bad_constructor_arguments(make: Any) -> None:
    with pytest.raises(LocalError) as exc:
        make()
    assert exc.value.code == "bad-key"


def test_other_network_is_refused_by_the_server() -> None:
    s = server(net=OTHER_NET)
    with pytest.raises(HandshakeError) as exc:
        s.receive_data(client().data_to_send())
    assert fail_code(exc) == "bad-network-key"
    assert_dead(s, "bad-network-key")


def test_other_network_is_refused_by_the_client() -> None:
    c = client()
    fake = server(net=OTHER_NET)
    fake.receive_data(client(net=OTHER_NET).data_to_send())
    with pytest.raises(HandshakeError) as exc:
        c.receive_data(fake.data_to_send())
    assert fail_code(exc) == "bad-network-key"
    c.data_to_send()
    assert_dead(c, "bad-network-key")


def test_wrong_server_key_fails_before_the_server_answers() -> None:
    c, s = client(server_public=STRANGER.public), server()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    msg3 = c.data_to_send()
    with pytest.raises(HandshakeError) as exc:
        s.receive_data(msg3)
    assert fail_code(exc) == "handshake-auth-failed"
    assert_dead(s, "handshake-auth-failed")
    # the client never gets msg4: the connection just closes
    with pytest.raises(HandshakeError) as exc:
        c.receive_data(b"")
    assert fail_code(exc) == "handshake-eof"


def test_impostor_server_cannot_finish() -> None:
    """A server holding another key pair cannot produce a msg4 the client accepts."""
    c = client()
    impostor = ServerHandshake(NET, STRANGER, S_EPH)
    impostor.receive_data(c.data_to_send())
    c.receive_data(impostor.data_to_send())
    with pytest.raises(HandshakeError):
        impostor.receive_data(c.data_to_send())  # cannot even open msg3
    forged = nacl.bindings.crypto_secretbox(STRANGER.sign_raw(b"x"), bytes(24), bytes(32))
    with pytest.raises(HandshakeError) as exc:
        c.receive_data(forged)
    assert fail_code(exc) == "handshake-auth-failed"
    assert_dead(c, "handshake-auth-failed")


def _secrets(c_eph: bytes = C_EPH, s_eph: bytes = S_EPH) -> tuple[bytes, bytes, bytes]:
    """(shash, key2, key3) for the fixed identities, computed independently of the module."""
    a = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(
        nacl.bindings.crypto_sign_seed_keypair(c_eph)[1]
    )
    b = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(
        nacl.bindings.crypto_sign_seed_keypair(s_eph)[1]
    )
    b_pub = nacl.bindings.crypto_scalarmult_base(b)
    ab = nacl.bindings.crypto_scalarmult(a, b_pub)
    a_b = nacl.bindings.crypto_scalarmult(
        a, nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(SERVER.public)
    )
    a_own_b = nacl.bindings.crypto_scalarmult(CLIENT.curve25519_secret(), b_pub)
    return sha256(ab), sha256(NET, ab, a_b), sha256(NET, ab, a_b, a_own_b)


def test_validly_boxed_but_badly_signed_msg3() -> None:
    shash, key2, _ = _secrets()
    s = server()
    s.receive_data(client().data_to_send())
    bad_sig = CLIENT.sign_raw(NET + STRANGER.public + shash)  # signed for another server
    msg3 = nacl.bindings.crypto_secretbox(bad_sig + CLIENT.public, bytes(24), key2)
    with pytest.raises(HandshakeError) as exc:
        s.receive_data(msg3)
    assert fail_code(exc) == "handshake-auth-failed"
    assert_dead(s, "handshake-auth-failed")


def test_validly_boxed_but_badly_signed_msg4() -> None:
    shash, key2, key3 = _secrets()
    c, s = client(), server()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    msg3 = c.data_to_send()
    sig_a = nacl.bindings.crypto_secretbox_open(msg3, bytes(24), key2)[:64]
    bad_sig_b = STRANGER.sign_raw(NET + sig_a + CLIENT.public + shash)
    with pytest.raises(HandshakeError) as exc:
        c.receive_data(nacl.bindings.crypto_secretbox(bad_sig_b, bytes(24), key3))
    assert fail_code(exc) == "handshake-auth-failed"
    # cross-check: the real server's msg4 is exactly this box with the right signature
    good_sig_b = SERVER.sign_raw(NET + sig_a + CLIENT.public + shash)
    s.receive_data(msg3)
    assert s.data_to_send() == nacl.bindings.crypto_secretbox(good_sig_b, bytes(24), key3)


def test_garbage_msg3() -> None:
    s = server()
    s.receive_data(client().data_to_send())
    s.data_to_send()
    with pytest.raises(HandshakeError) as exc:
        s.receive_data(bytes(range(MSG3_SIZE)))
    assert fail_code(exc) == "handshake-auth-failed"
    assert_dead(s, "handshake-auth-failed")


def test_nothing_is_sent_after_a_failure_even_if_queued() -> None:
    s = server()
    with pytest.raises(HandshakeError):
        s.receive_data(client().data_to_send() + bytes(MSG3_SIZE))
    assert s.data_to_send() == b""  # the queued msg2 was dropped too


# X25519 points of small order: scalarmult with any of them gives all zeros.
LOW_ORDER_POINTS = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("low_order", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_ephemeral_keys_fail(low_order: bytes) -> None:
    hello = hmac.new(NET, low_order, hashlib.sha512).digest()[:32] + low_order
    s = server()
    with pytest.raises(HandshakeError) as exc:
        s.receive_data(hello)
    assert fail_code(exc) == "handshake-auth-failed"
    assert_dead(s, "handshake-auth-failed")
    c = client()
    c.data_to_send()
    with pytest.raises(HandshakeError) as exc:
        c.receive_data(hello)
    assert fail_code(exc) == "handshake-auth-failed"
    assert_dead(c, "handshake-auth-failed")


@pytest.mark.parametrize("cut", [0, 1, MSG1_SIZE - 1])
def test_truncated_input_then_eof_server(cut: int) -> None:
    s = server()
    if cut:
        s.receive_data(client().data_to_send()[:cut])
    with pytest.raises(HandshakeError) as exc:
        s.receive_data(b"")
    assert fail_code(exc) == "handshake-eof"
    assert_dead(s, "handshake-eof")


def test_truncated_msg4_then_eof_client() -> None:
    c, s = client(), server()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send()[:-1])
    assert c.bytes_needed() == 1 and c.data_to_send() == b""
    with pytest.raises(HandshakeError) as exc:
        c.receive_data(b"")
    assert fail_code(exc) == "handshake-eof"
    assert_dead(c, "handshake-eof")


def test_authorize_refusal() -> None:
    c, s = client(), server(authorize=lambda pk: pk != CLIENT.public)
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    with pytest.raises(HandshakeError) as exc:
        s.receive_data(c.data_to_send())
    assert fail_code(exc) == "peer-rejected"
    assert_dead(s, "peer-rejected")


def test_authorize_exception_propagates_and_kills() -> None:
    def boom(_: bytes) -> bool:
        raise KeyError("bug in the callback")

    c, s = client(), server(authorize=boom)
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    with pytest.raises(KeyError):
        s.receive_data(c.data_to_send())
    assert_dead(s, "peer-rejected")


# -- hostile bytes ---------------------------------------------------------------------------


def _server_past_msg1() -> ServerHandshake:
    s = server()
    s.receive_data(client().data_to_send())
    s.data_to_send()
    return s


def _client_past_msg2() -> ClientHandshake:
    c = client()
    s = server()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    c.data_to_send()
    return c


MAKERS: dict[str, Callable[[], ClientHandshake | ServerHandshake]] = {
    "client": client,
    "server": server,
    "server-after-msg1": _server_past_msg1,
    "client-after-msg2": _client_past_msg2,
}


@settings(max_examples=200, deadline=None)
@given(
    role=st.sampled_from(sorted(MAKERS)),
    chunks=st.lists(st.binary(min_size=1, max_size=150), max_size=6),
    eof=st.booleans(),
)
def test_random_bytes_raise_only_handshake_error(role: str, chunks: list[bytes], eof: bool) -> None:
    hs: ClientHandshake | ServerHandshake = MAKERS[role]()
    try:
        for chunk in chunks:
            hs.receive_data(chunk)
        if eof:
            hs.receive_data(b"")
    except HandshakeError as exc:
        assert exc.code in {"bad-network-key", "handshake-auth-failed", "handshake-eof"}
        assert hs.data_to_send() == b""
        return
    assert not hs.done

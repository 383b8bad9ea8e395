"""core.discovery: the sealed record, its vectors, the dial rule and the backoff."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedlog.core.discovery import (
    BLOB_SIZE,
    SERVICE_TYPE,
    Announcement,
    DiscoveryError,
    backoff_delay,
    decode_record,
    discovery_key,
    encode_record,
    instance_label,
    instance_name,
    label_of,
    should_dial,
)
from feedlog.core.errors import LocalError, RemoteError
from feedlog.core.ids import FeedId

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "vectors" / "discovery.json").read_text()
)
N = bytes(range(32))
FEED = FeedId(bytes([7]) * 32)
LABEL = instance_label(bytes(range(10)))


def code_of(key: bytes, label: str, txt: Any, port: int) -> str:
    with pytest.raises(DiscoveryError) as e:
        decode_record(key, label, txt, port)
    assert isinstance(e.value, RemoteError)
    return e.value.code


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vectors_open_and_reencode(case: dict[str, Any]) -> None:
    key = bytes.fromhex(VECTORS["network_key"])
    assert discovery_key(key).hex() == VECTORS["discovery_key"]
    assert instance_name(case["label"]) == case["instance_name"]
    assert label_of(case["instance_name"]) == case["label"]
    ann = decode_record(key, case["label"], case["txt"], case["srv_port"])
    assert ann == Announcement(FeedId(bytes.fromhex(case["feed"])), case["port"])
    again = encode_record(key, case["label"], ann.feed, ann.port, bytes.fromhex(case["nonce"]))
    assert again == case["txt"]
    # zeroconf hands TXT over as bytes -> bytes; both forms decode the same
    as_bytes = {k.encode(): v.encode() for k, v in case["txt"].items()}
    assert decode_record(key, case["label"], as_bytes, case["srv_port"]) == ann


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_fail_with_their_code(case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["network_key"])
    assert code_of(key, case["label"], case["txt"], case["srv_port"]) == case["code"]


def test_vectors_cover_every_code_and_the_dial_rule() -> None:
    assert {c["code"] for c in VECTORS["invalid"]} == {
        "other-network", "discovery-port-mismatch", "discovery-version", "bad-discovery-record"}
    for d in VECTORS["dial"]:
        assert should_dial(bytes.fromhex(d["own"]), bytes.fromhex(d["peer"])) is d["dials"]
    assert sum(d["dials"] for d in VECTORS["dial"]) == 1
    assert VECTORS["service_type"] == SERVICE_TYPE


def test_record_is_fixed_size_and_hides_the_feed() -> None:
    a = encode_record(N, LABEL, FEED, 8008, bytes(24))
    b = encode_record(N, LABEL, FEED, 8008, bytes([1]) * 24)
    assert set(a) == {"v", "d"} and len(a["d"]) == len(b["d"]) == 99
    assert a["d"] != b["d"]  # a new nonce (a restart) gives an unlinkable record
    blob = base64.urlsafe_b64decode(a["d"] + "=")
    assert len(blob) == BLOB_SIZE
    assert bytes(FEED) not in blob and bytes(FEED)[:8] not in blob
    assert decode_record(N, LABEL, b, 8008).feed == FEED


def test_txt_keys_are_case_insensitive_and_extra_keys_ignored() -> None:
    t = encode_record(N, LABEL, FEED, 1, bytes(24))
    assert decode_record(N, LABEL, {"V": t["v"], "D": t["d"], "x": None}, 1).port == 1


def test_bad_inputs_to_encode_are_local_errors() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"port": 0}, "bad-port"), ({"port": 70000}, "bad-port"),
        ({"nonce": bytes(23)}, "bad-nonce"), ({"feed": FeedId(bytes(31))}, "bad-id"),
    ]
    for kwargs, code in cases:
        args: dict[str, Any] = {"feed": FEED, "port": 8008, "nonce": bytes(24), **kwargs}
        with pytest.raises(LocalError) as e:
            encode_record(N, LABEL, args["feed"], args["port"], args["nonce"])
        assert e.value.code == code
    with pytest.raises(LocalError) as e:
        discovery_key(bytes(31))
    assert e.value.code == "bad-network-key-size"
    with pytest.raises(LocalError):
        instance_label(bytes(9))


def test_label_of_other_types_and_valueless_fields() -> None:
    assert label_of("x._http._tcp.local.") is None
    assert label_of(SERVICE_TYPE) is None
    assert label_of("FL-AB._FEEDLOG._TCP.LOCAL.") == "FL-AB"
    t = encode_record(N, LABEL, FEED, 1, bytes(24))
    assert code_of(N, LABEL, {"v": None, "d": t["d"]}, 1) == "bad-discovery-record"
    assert code_of(N, LABEL, {"v": "1", "d": None}, 1) == "bad-discovery-record"
    assert code_of(N, "x" * 64, t, 1) == "bad-discovery-record"


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_exactly_one_side_dials(a: bytes, b: bytes) -> None:
    if a == b:
        assert not should_dial(a, b)
    else:
        assert should_dial(a, b) != should_dial(b, a)


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0, max_value=0.999999))
def test_backoff_grows_is_capped_and_jittered(n: int, j: float) -> None:
    d = backoff_delay(n, base=0.5, cap=30.0, jitter=j)
    raw = min(30.0, 0.5 * 2 ** (n - 1))
    assert raw / 2 <= d < raw or d == raw / 2
    assert d <= 30.0


def test_backoff_sequence() -> None:
    assert backoff_delay(0, base=1, cap=8, jitter=0.5) == 0.0
    full = [backoff_delay(n, base=1, cap=8, jitter=0.999) for n in range(1, 7)]
    assert [round(x) for x in full] == [1, 2, 4, 8, 8, 8]
    assert backoff_delay(3, base=1, cap=8, jitter=0.0) == 2.0
    with pytest.raises(LocalError):
        backoff_delay(1, base=1, cap=8, jitter=1.0)

"""Generate spec/vectors/discovery.json (spec/discovery.md §6) from fixed inputs.

``python spec/make_discovery_vectors.py`` writes the file; ``--check`` fails when the committed
file differs from what the code produces now. Nonces and labels are fixed here; a real node
draws them at random once per run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from vectorfile import write_or_check

from feedlog.core.crypto import Keypair
from feedlog.core.discovery import (
    NONCE_SIZE,
    discovery_key,
    encode_record,
    instance_label,
    instance_name,
)
from feedlog.core.ids import FeedId, feed_id_text

OUT = Path(__file__).resolve().parent / "vectors" / "discovery.json"


def fixed(label: str, n: int) -> bytes:
    return hashlib.sha256(b"feedlog discovery vector " + label.encode()).digest()[:n]


def blob_of(txt: dict[str, str]) -> bytes:
    d = txt["d"]
    return base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))


def b64(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).decode().rstrip("=")


def build() -> dict[str, Any]:
    network = fixed("network key", 32)
    other = fixed("another network key", 32)
    alice = Keypair.from_seed(fixed("alice", 32))
    bob = Keypair.from_seed(fixed("bob", 32))
    valid: list[dict[str, Any]] = []
    for who, keys, port, tag in (("alice", alice, 8008, "a"), ("bob", bob, 65535, "b")):
        label = instance_label(fixed("label " + tag, 10))
        nonce = fixed("nonce " + tag, NONCE_SIZE)
        txt = encode_record(network, label, FeedId(keys.public), port, nonce)
        valid.append({
            "name": who, "label": label, "instance_name": instance_name(label),
            "nonce": nonce.hex(), "feed": keys.public.hex(),
            "feed_text": feed_id_text(keys.public), "port": port, "srv_port": port, "txt": txt,
        })

    a = valid[0]
    label, txt = a["label"], a["txt"]
    blob = blob_of(txt)
    flipped = bytearray(blob)
    flipped[NONCE_SIZE + 3] ^= 0x01
    nonce_flipped = bytearray(blob)
    nonce_flipped[0] ^= 0x80

    def case(name: str, code: str, *, t: dict[str, str] | None = None, lab: str = label,
             srv: int = 8008, key: bytes = network, note: str = "") -> dict[str, Any]:
        return {"name": name, "network_key": key.hex(), "label": lab, "srv_port": srv,
                "txt": txt if t is None else t, "code": code, "note": note}

    invalid = [
        case("other network key", "other-network", key=other,
             note="a peer of another network cannot open the record"),
        case("ciphertext bit flipped", "other-network", t={**txt, "d": b64(bytes(flipped))}),
        case("nonce bit flipped", "other-network", t={**txt, "d": b64(bytes(nonce_flipped))}),
        case("moved to another instance label", "other-network",
             lab=instance_label(fixed("label z", 10)),
             note="the label is associated data: a record copied under another name fails"),
        case("copied to another port", "discovery-port-mismatch", srv=9009,
             note="the SRV port differs from the sealed one"),
        case("unknown version", "discovery-version", t={**txt, "v": "2"}),
        case("no version", "bad-discovery-record", t={"d": txt["d"]}),
        case("no data", "bad-discovery-record", t={"v": "1"}),
        case("data truncated", "bad-discovery-record", t={**txt, "d": txt["d"][:-4]}),
        case("data too long", "bad-discovery-record", t={**txt, "d": txt["d"] + "AAAA"}),
        case("data not base64url", "bad-discovery-record",
             t={**txt, "d": "*" + txt["d"][1:]}),
        case("data with standard base64 characters", "bad-discovery-record",
             t={**txt, "d": "+" + txt["d"][1:]}),
        case("data padded", "bad-discovery-record", t={**txt, "d": txt["d"][:-1] + "="}),
    ]
    return {
        "description": "feedlog LAN discovery records (spec/discovery.md). Hex fields are bytes; "
                       "txt is the DNS-SD TXT record as key -> value text.",
        "service_type": "_feedlog._tcp.local.",
        "network_key": network.hex(),
        "discovery_key": discovery_key(network).hex(),
        "valid": valid,
        "invalid": invalid,
        "dial": [
            {"own": alice.public.hex(), "peer": bob.public.hex(),
             "dials": alice.public < bob.public},
            {"own": bob.public.hex(), "peer": alice.public.hex(),
             "dials": bob.public < alice.public},
            {"own": alice.public.hex(), "peer": alice.public.hex(), "dials": False},
        ],
    }


def main() -> int:
    return write_or_check(OUT, json.dumps(build(), indent=1) + "\n", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

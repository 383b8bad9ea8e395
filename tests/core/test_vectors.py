"""spec/vectors/feed.json: every valid feed validates, every invalid case fails with its code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from feedlog.core.errors import InvalidMessage
from feedlog.core.ids import FeedId, MsgId, feed_id_text, msg_id_text
from feedlog.core.message import FeedState, content_hash
from feedlog.core.validate import check_signature, decode_message, validate

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "vectors" / "feed.json").read_text()
)


def state(d: dict[str, Any]) -> FeedState:
    head = None if d["head"] is None else MsgId(bytes.fromhex(d["head"]))
    return FeedState(FeedId(bytes.fromhex(d["author"])), d["seq"], head)


def test_enough_invalid_cases() -> None:
    assert len(VECTORS["invalid"]) >= 15
    assert len({c["code"] for c in VECTORS["invalid"]}) >= 12


@pytest.mark.parametrize("feed", VECTORS["valid_feeds"], ids=lambda f: f["name"])
def test_valid_feed(feed: dict[str, Any]) -> None:
    author = FeedId(bytes.fromhex(feed["author"]))
    assert feed_id_text(author) == feed["author_text"]
    st = FeedState(author)
    for e in feed["messages"]:
        m = validate(st, bytes.fromhex(e["raw"]))
        assert m.id.hex() == e["id"] and msg_id_text(m.id) == e["id_text"]
        assert m.seq == e["seq"] and m.timestamp == e["timestamp"]
        assert (m.previous.hex() if m.previous else None) == e["previous"]
        assert m.header.hex() == e["header"] and m.signature.hex() == e["signature"]
        assert m.type == e["type"]
        st = m.state
    assert st.seq == len(feed["messages"])


@pytest.mark.parametrize("case", VECTORS["valid_content_absent"], ids=lambda c: c["name"])
def test_content_absent(case: dict[str, Any]) -> None:
    m = validate(state(case["state"]), bytes.fromhex(case["raw"]))
    assert m.content is None and m.value is None and m.type is None
    assert m.content_hash.hex() == case["content_hash"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage) as info:
        validate(state(case["state"]), bytes.fromhex(case["raw"]))
    assert info.value.code == case["code"]
    assert info.value.fatal == case["fatal"]


def test_signature_commits_to_content_through_its_hash() -> None:
    e = VECTORS["valid_feeds"][0]["messages"][1]
    m = decode_message(bytes.fromhex(e["raw"]))
    assert m.content is not None and content_hash(m.content) == m.content_hash
    check_signature(m)

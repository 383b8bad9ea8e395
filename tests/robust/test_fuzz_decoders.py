"""Hypothesis fuzzing of every decoder in fuzz/targets.py (bounded: this runs in the suite).

For each target: arbitrary bytes, arbitrary CBOR-ish values and one-byte changes of valid
inputs; only FeedlogError may escape, and a changed input is rejected or has one byte form
(see the properties in fuzz/targets.py). ``make fuzz`` runs the same targets under atheris
for as long as you like.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedlog.core.ids import feed_id_text, parse_feed_id
from fuzz.targets import BY_NAME, TARGETS, Target, run_one

FAST = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IDS = [t.name for t in TARGETS]


def test_every_target_has_seeds_that_decode() -> None:
    assert len(TARGETS) >= 15
    for t in TARGETS:
        seeds = t.seeds()
        assert seeds, t.name
        for s in seeds:
            assert run_one(t, s)[0], (t.name, s)


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@FAST
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_feedlog_errors(target: Target, data: bytes) -> None:
    run_one(target, data)  # anything but a FeedlogError fails the test


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@FAST
@given(data=st.data())
def test_seed_prefixes_and_splices(target: Target, data: st.DataObject) -> None:
    """Truncations and cross-overs of valid inputs reach deeper than random bytes do."""
    seeds = target.seeds()
    a = data.draw(st.sampled_from(seeds))
    b = data.draw(st.sampled_from(seeds))
    i = data.draw(st.integers(0, len(a)))
    j = data.draw(st.integers(0, len(b)))
    run_one(target, a[:i])
    run_one(target, a[:i] + b[j:])


def _mutate(seed: bytes, kind: str, pos: int, byte: int) -> bytes:
    if kind == "replace":
        pos %= len(seed)
        return seed[:pos] + bytes([byte]) + seed[pos + 1 :]
    if kind == "insert":
        pos %= len(seed) + 1
        return seed[:pos] + bytes([byte]) + seed[pos:]
    pos %= len(seed)
    return seed[:pos] + seed[pos + 1 :]


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@settings(FAST, max_examples=250)
@given(data=st.data())
def test_one_byte_changes_are_rejected_or_canonical(target: Target, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(target.seeds()))
    kind = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    pos = data.draw(st.integers(0, 1 << 16))
    byte = data.draw(st.integers(0, 255))
    changed = _mutate(seed, kind, pos, byte)
    if changed == seed:
        return
    accepted, value = run_one(target, changed)
    if not accepted:
        return
    same = target.canonical(value) == target.canonical(target.decode(seed))
    if target.authenticated:
        assert same, f"{target.name}: a changed authenticated input was accepted"
    else:
        assert same or target.canonical(value) == target.spelling(changed), (
            f"{target.name}: {changed.hex()} was accepted but is not the one byte form of "
            f"what it decodes to")


_scalars = (st.integers(-(2**70), 2**70) | st.binary(max_size=40) | st.text(max_size=20)
            | st.booleans() | st.none() | st.floats(allow_nan=True))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.integers(0, 5), inner, max_size=4)
    | st.builds(cbor2.CBORTag, st.integers(0, 300), inner),
    max_leaves=12,
)
CBOR_TARGETS = [BY_NAME[n] for n in ("cbor", "message", "content", "group-content",
                                     "bundle-summary", "fork-proof", "validate")]


@pytest.mark.parametrize("target", CBOR_TARGETS, ids=[t.name for t in CBOR_TARGETS])
@FAST
@given(value=_values, canonical=st.booleans())
def test_structured_cbor(target: Target, value: Any, canonical: bool) -> None:
    """Well-formed CBOR of every type (floats, tags, int keys, bignums), not just of the
    subset, reaches the shape checks that random bytes rarely get past."""
    try:
        raw = cbor2.dumps(value, canonical=canonical)
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return
    run_one(target, raw)


@FAST
@given(header=_values, signature=st.binary(min_size=64, max_size=64),
       content=_values | st.none())
def test_message_with_arbitrary_header_and_content(header: Any, signature: bytes,
                                                   content: Any) -> None:
    """The header and content are CBOR inside byte strings: fuzz those inner layers too."""
    try:
        inner = cbor2.dumps(header, canonical=True)
        body = None if content is None else cbor2.dumps(content, canonical=True)
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return
    raw = cbor2.dumps([inner, signature, body], canonical=True)
    for name in ("message", "message-signed"):
        run_one(BY_NAME[name], raw)


@FAST
@given(raw=st.binary(min_size=32, max_size=32),
       flips=st.lists(st.booleans(), min_size=60, max_size=60))
def test_ids_parse_in_any_letter_case(raw: bytes, flips: list[bool]) -> None:
    """The id seeds are canonical (lower case); here: any mix of cases means the same id."""
    text = feed_id_text(raw)
    mixed = "".join(c.upper() if f else c for c, f in zip(text, flips, strict=False))
    assert parse_feed_id(mixed) == raw
    assert BY_NAME["id"].decode(mixed.encode()) == text

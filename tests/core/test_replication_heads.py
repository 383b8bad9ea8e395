"""Head prefixes in note entries (spec/replication.md §5.2, §8.1): the session swaps the
messages of a common seq when the heads differ, and only then."""

from __future__ import annotations

import pytest

from feedlog.core import replication as rp
from feedlog.core.errors import ProtocolError
from feedlog.core.ids import FeedId
from feedlog.core.wire import (
    MODE_DELTA,
    MODE_FULL,
    MODE_UPDATE,
    Entry,
    Hello,
    Notes,
    decode_body,
    encode_frame,
    make_note,
)

F = FeedId(b"\x07" * 32)
G = FeedId(b"\x09" * 32)
H1, H2, H3 = b"\x11" * 8, b"\x22" * 8, b"\x33" * 8


def entry(seq: int, head: bytes | None = None, forked: int | None = None,
          feed: FeedId = F) -> Entry:
    return Entry(feed, make_note(seq, forked is None), forked, head if seq else None)


def session(mine: list[Entry], seqs: dict[FeedId, int] | None = None, *,
            live: bool = False, sent_base: rp.Table | None = None,
            recv_base: rp.Table | None = None) -> rp.Session:
    s = rp.Session(mine={FeedId(e.feed): e for e in mine},
                   seqs=seqs if seqs is not None else {FeedId(e.feed): e.seq for e in mine},
                   sent_base=sent_base or {}, recv_base=recv_base or {}, live=live)
    s.start()
    return s


def meet(s: rp.Session, theirs: list[Entry], *, live: bool = False,
         baseline: bytes = b"", mode: int = MODE_FULL) -> list[rp.Effect]:
    out = s.receive(Hello(1, baseline, live))
    return out + s.receive(Notes(mode, True, tuple(theirs)))


def ranges(effects: list[rp.Effect]) -> list[tuple[FeedId, int, int]]:
    return [(e.feed, e.first, e.last) for e in effects if isinstance(e, rp.SendRange)]


def plan(effects: list[rp.Effect]) -> rp.Plan:
    [p] = [e for e in effects if isinstance(e, rp.Plan)]
    return p


def test_same_seq_different_heads_swaps_the_two_messages() -> None:
    s = session([entry(5, H1)])
    out = meet(s, [entry(5, H2)])
    assert plan(out) == rp.Plan({F: (5, 5)}, {F: (5, 5)})
    assert ranges(out) == [(F, 5, 5)]
    assert s.accepts(F)


def test_same_seq_same_head_moves_nothing() -> None:
    s = session([entry(5, H1)])
    out = meet(s, [entry(5, H1)])
    assert plan(out) == rp.Plan({}, {}) and ranges(out) == []


@pytest.mark.parametrize("theirs", [
    entry(5),  # a peer that names no head: nothing to compare
    entry(5, H2, forked=3),  # the peer holds a proof already: it sends it, no message moves
])
def test_no_head_swap_without_a_comparable_head(theirs: Entry) -> None:
    s = session([entry(5, H1)])
    out = meet(s, [theirs])
    assert plan(out) == rp.Plan({}, {}) and ranges(out) == []


def test_lengths_that_differ_stream_as_before() -> None:
    # the longer side sends from the shorter side's seq + 1; its first message proves a fork
    # at the receiver by its previous (wrong-previous), whatever the heads say
    s = session([entry(5, H1)])
    out = meet(s, [entry(4, H2)])
    assert plan(out) == rp.Plan({}, {F: (5, 5)})
    s = session([entry(4, H1)])
    out = meet(s, [entry(6, H2)])
    assert plan(out) == rp.Plan({F: (5, 6)}, {}) and ranges(out) == []


def test_a_forked_feed_swaps_nothing() -> None:
    s = session([entry(5, H1, forked=2)])
    out = meet(s, [entry(5, H2)])
    assert plan(out) == rp.Plan({}, {}) and ranges(out) == []
    assert any(isinstance(e, rp.SendForks) for e in out)


def test_the_head_at_a_later_seq_comes_from_what_was_stored() -> None:
    # the entry named seq 4; the node has stored seq 5 since, whose head the shell passed on
    s = session([entry(4, H1)], seqs={F: 4})
    s.local_advanced(F, 5, H3)
    out = meet(s, [entry(5, H2)])
    assert ranges(out) == [(F, 5, 5)]
    # without the head of what it stored, the session cannot compare and sends nothing
    s = session([entry(4, H1)], seqs={F: 4})
    s.local_advanced(F, 5)
    assert ranges(meet(s, [entry(5, H2)])) == []
    s = session([entry(4, H1)], seqs={F: 4})
    s.ingested({F: 5}, {F: H2})
    assert ranges(meet(s, [entry(5, H2)])) == []  # the same message: nothing to swap


def test_an_unchanged_baseline_entry_still_compares_heads() -> None:
    """Request skipping leaves the entry out of the delta; the receiver takes it from its
    baseline, heads included, and still finds the difference."""
    base_mine, base_theirs = {F: entry(5, H1)}, {F: entry(5, H2)}
    s = session([entry(5, H1)], sent_base=dict(base_mine), recv_base=dict(base_theirs))
    out = meet(s, [], baseline=rp.digest(base_mine), mode=MODE_DELTA)
    sent = [e.frame for e in out if isinstance(e, rp.Send) and isinstance(e.frame, Notes)]
    assert sent and sent[0].mode == MODE_DELTA and sent[0].entries == ()
    assert ranges(out) == [(F, 5, 5)]


def test_a_head_in_an_update_is_compared_once_in_a_live_session() -> None:
    s = session([entry(5, H1), entry(2, H3, feed=G)], live=True)
    out = meet(s, [entry(2, H3, feed=G)], live=True)
    assert ranges(out) == []
    out = s.receive(Notes(MODE_UPDATE, True, (entry(5, H2),)))  # the peer now replicates F
    assert ranges(out) == [(F, 5, 5)]
    # the same entry again (e.g. its flag changed back and forth): not sent twice
    out = s.receive(Notes(MODE_UPDATE, True, (entry(5, H2),)))
    assert ranges(out) == []


def test_a_feed_we_start_replicating_is_compared_in_a_live_session() -> None:
    s = session([entry(2, H3, feed=G)], seqs={G: 2, F: 5}, live=True)
    meet(s, [entry(2, H3, feed=G), entry(5, H2)], live=True)
    out = s.local_changed({F: entry(5, H1)})
    assert ranges(out) == [(F, 5, 5)]


def test_the_digest_covers_the_head() -> None:
    assert rp.digest({F: entry(5, H1)}) != rp.digest({F: entry(5, H2)})
    assert rp.digest({F: entry(5, H1)}) != rp.digest({F: entry(5)})
    assert rp.digest({F: entry(5, H1)}) == rp.digest({F: Entry(F, make_note(5, True), None, H1)})


@pytest.mark.parametrize("e", [
    entry(0), entry(0, forked=1), entry(3, H1), entry(3, H1, forked=2), entry(3, forked=2),
    entry(3), Entry(F, -1)])
def test_every_entry_form_round_trips(e: Entry) -> None:
    frame = Notes(MODE_FULL, True, (e,))
    assert decode_body(encode_frame(frame)[4:]) == frame


def test_a_head_on_an_empty_feed_is_refused() -> None:
    frame = Notes(MODE_FULL, True, (Entry(F, make_note(0, True), None, H1),))
    with pytest.raises(ProtocolError) as exc:
        decode_body(encode_frame(frame)[4:])
    assert exc.value.code == "bad-frame"

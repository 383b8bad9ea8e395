"""The replication state machine in the seeded simulator (tests/sim.py): 120 seeds converge, and
60 more with twins (one key writing on two peers) all end with the fork marked everywhere. Peers
follow, unfollow and block during the runs, so updates and the messages still in flight for a
feed that left a peer's set are exercised too."""

from __future__ import annotations

import pytest

from feedlog.core.wire import Entry
from tests.sim import SimFailure, World


def run_seed(seed: int, forks: bool = False) -> World:
    w = World(seed, peers=3 + seed % 4, forks=forks)
    try:
        w.random_run(steps=250)
        w.check_converged()
        if forks:
            w.check_quiet_reconnect()
    except Exception as exc:  # any failure, with its seed and trace
        trace = "\n".join(w.trace[-80:])
        kind = "" if isinstance(exc, SimFailure) else f"{type(exc).__name__}: "
        pytest.fail(f"seed {seed}: {kind}{exc}\nlast steps of the trace:\n{trace}")
    return w


@pytest.mark.parametrize("block", range(6))
def test_random_schedules_converge(block: int) -> None:
    changes = stale = 0
    for seed in range(block * 20, block * 20 + 20):
        w = run_seed(seed)
        changes += w.set_changes
        stale += w.dropped_msgs
    # the schedules really change what peers replicate, with messages in flight
    assert changes > 0 and stale > 0, (changes, stale)


@pytest.mark.parametrize("block", range(3))
def test_random_schedules_with_twins_converge_and_mark_every_fork(block: int) -> None:
    forked = 0
    for seed in range(1000 + block * 20, 1000 + block * 20 + 20):
        forked += len(run_seed(seed, forks=True).forked_feeds())
    assert forked >= 5  # the schedules really produce forks, not only clean feeds


def test_equal_length_fork_is_found_by_a_third_peer_and_then_nothing_moves() -> None:
    w = World(11, peers=3, feeds_blocked=False, forks=True)
    w.publish(0, 3)  # p0's feed, written on p0 ...
    w.twin(1, 0, 3)  # ... and, with the same key, on p1: the same length, another history
    author = w.peers[0].id
    c = w.connect(2, 0, live=False)
    w.quiesce()
    w.disconnect(c)
    assert w.peers[2].held[author] == 3 and not w.peers[2].forked
    c = w.connect(2, 1, live=False)
    w.quiesce()
    w.disconnect(c)
    # same seq, different heads: each side sent its message 3 and found the fork
    assert c.msgs_sent == {2: 1, 1: 1}
    assert w.peers[2].forked == {author: 3} and w.peers[1].forked == {author: 3}
    c = w.connect(2, 0, live=False)  # the proof reaches the author's first home
    w.quiesce()
    w.disconnect(c)
    assert w.peers[0].forked == {author: 3} and c.forks_sent == {2: 1}
    assert not c.msgs_sent
    w.check_converged()
    w.check_quiet_reconnect()


def test_simulator_catches_an_unseen_equal_length_fork() -> None:
    """The checks can fail: without heads in the entries, an equal-length fork stays unseen."""
    from tests import sim

    w = World(12, peers=3, feeds_blocked=False, forks=True)
    original = sim.head_of
    sim.head_of = lambda raw: b"\x00" * 8
    try:
        w.publish(0, 2)
        w.twin(1, 0, 2)
        w.connect(0, 1, live=True)
        w.quiesce()
        with pytest.raises(SimFailure, match="forked"):
            w.check_converged()
    finally:
        sim.head_of = original


def test_reconnect_with_nothing_new_sends_no_entries() -> None:
    w = World(7, peers=3, feeds_blocked=False)
    for i in range(3):
        w.publish(i, 5)
    c = w.connect(0, 1, live=False)
    w.quiesce()
    assert c.caught_up == {0, 1}
    first = dict(c.notes_entries)
    assert first == {0: 3, 1: 3}  # full vectors: every replicated feed
    w.disconnect(c)
    # the seqs changed during the first session, so those entries are sent once more ...
    c2 = w.connect(0, 1, live=False)
    w.quiesce()
    w.disconnect(c2)
    # ... and after that, nothing at all
    c3 = w.connect(0, 1, live=False)
    w.quiesce()
    assert c3.caught_up == {0, 1}
    assert c3.notes_entries == {0: 0, 1: 0}
    w.publish(2, 1)  # p2's feed changes on p0 only after p0 and p2 meet
    c4 = w.connect(0, 2, live=False)
    w.quiesce()
    w.disconnect(c4)
    c5 = w.connect(0, 1, live=False)
    w.quiesce()
    assert c5.notes_entries == {0: 1, 1: 0}  # only p2's feed changed for p0
    assert w.peers[1].held[w.peers[2].id] == 6


def test_lost_baseline_falls_back_to_a_full_vector() -> None:
    w = World(3, peers=3, feeds_blocked=False)
    w.publish(0, 3)
    c = w.connect(0, 1, live=False)
    w.quiesce()
    w.disconnect(c)
    del w.peers[1].baselines[(0, "recv")]
    c2 = w.connect(0, 1, live=False)
    w.quiesce()
    assert c2.notes_entries[0] == 3  # p1 gave no baseline: p0 sent its full vector
    assert c2.caught_up == {0, 1}


def test_live_push_reaches_a_connected_peer() -> None:
    w = World(5, peers=2, feeds_blocked=False)
    c = w.connect(0, 1, live=True)
    w.quiesce()
    w.publish(0, 4)
    w.quiesce()
    assert w.peers[1].held[w.peers[0].id] == 4
    assert c.caught_up == {0, 1}


def test_simulator_catches_a_broken_session() -> None:
    """The simulator's checks can fail: a session that forgets to stream is caught."""
    from feedlog.core import replication as rep

    w = World(1, peers=2, feeds_blocked=False)
    w.publish(0, 3)
    original = rep.Session._begin

    def lazy(self: rep.Session) -> list[rep.Effect]:
        return [e for e in original(self) if not isinstance(e, rep.SendRange)]

    rep.Session._begin = lazy  # type: ignore[method-assign]
    try:
        w.connect(0, 1, live=False)
        w.quiesce()
        with pytest.raises(SimFailure):
            w.check_converged()
    finally:
        rep.Session._begin = original  # type: ignore[method-assign]


def test_a_vector_larger_than_the_limit_closes_the_session() -> None:
    from feedlog.core import replication as rep
    from feedlog.core.wire import MODE_FULL, Hello, Notes

    s = rep.Session(mine={}, seqs={}, max_entries=2)
    s.start()
    s.receive(Hello(1, b"", False))
    entries = tuple(Entry(bytes([i]) * 32, 0) for i in range(1, 4))
    out = s.receive(Notes(MODE_FULL, True, entries))
    assert out == [rep.Close("too-many-notes", "the peer's vector holds more than 2 feeds")]
    assert s.closed

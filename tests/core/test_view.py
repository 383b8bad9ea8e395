"""Tests of core.view (spec/view.md): the vectors, unit cases, and properties of simulated
conversations: the order depends only on the set of messages, respects every reference and
author order, loses and repeats nothing, and GroupIndex agrees with order_group."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedlog.core.errors import LocalError
from feedlog.core.group_content import (
    group_content,
    message_from_content,
    post_content,
    root_from_content,
)
from feedlog.core.view import (
    Entry,
    GroupIndex,
    GroupMessage,
    GroupRoot,
    GroupView,
    MsgRef,
    order_group,
    tips,
)

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "spec" / "vectors" / "view.json"
PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


ROOT = GroupRoot(h("root"), h("author:root"), 1, 0, "a group", None)
GREF = ROOT.ref


def post(
    label: str,
    author: str,
    seq: int,
    timestamp: int,
    refs: Sequence[MsgRef] = (GREF,),
    reply: MsgRef | None = None,
    group: MsgRef = GREF,
) -> GroupMessage:
    return GroupMessage(
        h(label), h("author:" + author), seq, timestamp, group, tuple(refs), reply, label
    )


def ids(view: GroupView) -> list[bytes]:
    return list(view.order)


# --- vectors ------------------------------------------------------------------------------------


def _ref(d: dict[str, Any]) -> MsgRef:
    return MsgRef(bytes.fromhex(d["author"]), d["seq"], bytes.fromhex(d["id"]))


def _refs(ds: list[dict[str, Any]]) -> tuple[MsgRef, ...]:
    return tuple(_ref(d) for d in ds)


def _load_case(case: dict[str, Any]) -> tuple[GroupRoot | None, list[GroupMessage]]:
    r = case["root"]
    root = (
        None
        if r is None
        else GroupRoot(
            bytes.fromhex(r["id"]), bytes.fromhex(r["author"]), r["seq"], r["timestamp"],
            r["title"], None,
        )
    )
    messages = [
        GroupMessage(
            bytes.fromhex(m["id"]), bytes.fromhex(m["author"]), m["seq"], m["timestamp"],
            _ref(m["group"]), _refs(m["refs"]), None if m["reply"] is None else _ref(m["reply"]),
            m["text"],
        )
        for m in case["messages"]
    ]
    return root, messages


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _cases(), ids=lambda c: str(c["name"]))
def test_vector(case: dict[str, Any]) -> None:
    root, messages = _load_case(case)
    want = case["expected"]
    _agrees_with_spec(order_group(root, messages), messages)
    for view in (order_group(root, messages), _indexed(root, _ref(case["group"]).id, messages)):
        assert [i.hex() for i in view.order] == want["order"]
        assert view.tips == _refs(want["tips"])
        got_entries = [
            (e.message.id.hex(), e.missing_refs, e.reply_missing, e.ignored_refs)
            for e in view.entries
        ]
        assert got_entries == [
            (w["id"], _refs(w["missing_refs"]), w["reply_missing"], _refs(w["ignored_refs"]))
            for w in want["entries"]
        ]
        got_missing = [(f.author.hex(), f.max_seq, f.refs) for f in view.missing]
        want_missing = [(f["author"], f["max_seq"], _refs(f["refs"])) for f in want["missing"]]
        assert got_missing == want_missing


def _indexed(root: GroupRoot | None, group_id: bytes, messages: list[GroupMessage]) -> GroupView:
    index = GroupIndex(group_id, root)
    index.update(messages)
    return index.view()


def test_vectors_file_is_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    # as when the script runs: its own folder is first on the path (spec/vectorfile.py)
    monkeypatch.syspath_prepend(str(REPO / "spec"))
    spec = importlib.util.spec_from_file_location(
        "make_view_vectors", REPO / "spec" / "make_view_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_view_vectors"] = module
    spec.loader.exec_module(module)
    assert module.render() == VECTORS.read_text()
    assert len(_cases()) >= 8


# --- unit tests ---------------------------------------------------------------------------------


def test_empty() -> None:
    v = order_group(ROOT, [])
    assert v.entries == () and v.tips == (GREF,) and v.missing == () and v.complete
    assert v.group_id == ROOT.id
    v = order_group(None, [])
    assert v.entries == () and v.tips == () and v.group_id is None and v.root_missing
    assert tips(GREF, []) == (GREF,)


def test_tie_broken_by_timestamp_then_id() -> None:
    a, b, c = post("x1", "A", 1, 5), post("x2", "B", 1, 5), post("x3", "C", 1, 4)
    want = [c.id, *sorted([a.id, b.id])]
    assert ids(order_group(ROOT, [a, b, c])) == want


def test_reference_beats_timestamp_and_tips_follow() -> None:
    a = post("a", "A", 1, 100)
    b = post("b", "B", 1, 1, refs=[a.ref])
    c = post("c", "C", 1, 50)
    v = order_group(ROOT, [b, c, a])
    assert ids(v) == [c.id, a.id, b.id]
    assert v.tips == tuple(sorted([b.ref, c.ref], key=lambda r: r.id))
    assert tips(GREF, [a, b, c]) == v.tips


def test_missing_reference_report() -> None:
    gone = [MsgRef(h("author:Z"), s, h(f"z{s}")) for s in (3, 8, 5)]
    a = post("a", "A", 1, 10, refs=[gone[0], gone[1], gone[1]], reply=gone[2])
    v = order_group(ROOT, [a])
    (entry,) = v.entries
    assert entry.missing_refs == tuple(sorted([gone[0], gone[1]]))
    assert entry.reply_missing
    (feed,) = v.missing
    assert feed.author == h("author:Z") and feed.max_seq == 8
    assert feed.refs == tuple(sorted(gone))
    assert v.missing_refs == feed.refs and not v.complete


def test_missing_root_is_reported_and_refs_to_present_root_are_not() -> None:
    a = post("a", "A", 1, 10, refs=[GREF], reply=GREF)
    with_root = order_group(ROOT, [a])
    assert with_root.complete and with_root.entries == (Entry(a),)
    without = order_group(None, [a])
    assert without.group_id == ROOT.id and without.root_missing
    assert without.missing_refs == (GREF,)
    assert without.entries == (Entry(a, (GREF,), True),)


def test_wrong_group_and_id_conflicts() -> None:
    other = MsgRef(h("author:o"), 1, h("other root"))
    a, b = post("a", "A", 1, 1), post("b", "B", 1, 1, group=other)
    for root in (ROOT, None):
        with pytest.raises(LocalError) as err:
            order_group(root, [a, b])
        assert err.value.code == "wrong-group"
    forged = GroupMessage(a.id, a.author, 2, 1, GREF, (), None, "another text")
    with pytest.raises(LocalError) as err:
        order_group(ROOT, [a, forged])
    assert err.value.code == "id-conflict"
    posing = GroupMessage(ROOT.id, a.author, 3, 1, GREF, (), None, "I am the root")
    with pytest.raises(LocalError) as err:
        order_group(None, [posing])
    assert err.value.code == "id-conflict"
    index = GroupIndex(ROOT.id)
    with pytest.raises(LocalError) as err:
        index.add(b)
    assert err.value.code == "wrong-group"
    index.add(a)
    with pytest.raises(LocalError) as err:
        index.add(forged)
    assert err.value.code == "id-conflict"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((b"short", 1, h("x")), "bad-msgref"),
        ((h("a"), 0, h("x")), "bad-msgref"),
        ((h("a"), True, h("x")), "bad-msgref"),
        ((h("a"), 1, bytearray(32)), "bad-msgref"),
    ],
)
def test_msgref_checks(args: tuple[Any, ...], code: str) -> None:
    with pytest.raises(LocalError) as err:
        MsgRef(*args)
    assert err.value.code == code


def test_message_checks() -> None:
    good = post("a", "A", 1, 1)
    bad: list[dict[str, Any]] = [
        {"seq": 0}, {"timestamp": 1.5}, {"refs": [GREF]}, {"reply": "x"}, {"group": h("g")},
        {"text": b"bytes"}, {"id": h("a")[:31]},
    ]
    for change in bad:
        fields = {
            "id": good.id, "author": good.author, "seq": good.seq, "timestamp": good.timestamp,
            "group": good.group, "refs": good.refs, "reply": good.reply, "text": good.text,
            **change,
        }
        with pytest.raises(LocalError) as err:
            GroupMessage(**fields)
        assert err.value.code == "bad-group-message", change


def test_content_round_trip_and_rejects() -> None:
    a = post("a", "A", 3, 7, refs=[GREF], reply=GREF)
    content = post_content(GREF, a.refs, a.text, a.reply)
    assert message_from_content(a.id, a.author, a.seq, a.timestamp, content) == a
    plain = {"type": "post", "text": "no group"}
    assert message_from_content(a.id, a.author, a.seq, 1, plain) is None
    for broken in (
        {**content, "refs": [[a.author, 0, a.id]]},
        {**content, "refs": "x"},
        {**content, "reply": None},
        {**content, "group": [a.author, 1]},
        {**content, "text": 3},
    ):
        assert message_from_content(a.id, a.author, a.seq, 1, broken) is None
    members = [h("m1"), h("m2")]
    g = group_content("title", members)
    assert root_from_content(ROOT.id, ROOT.author, 1, 0, g) == GroupRoot(
        ROOT.id, ROOT.author, 1, 0, "title", tuple(members)
    )
    assert root_from_content(ROOT.id, ROOT.author, 1, 0, group_content("t")) == GroupRoot(
        ROOT.id, ROOT.author, 1, 0, "t", None
    )
    assert root_from_content(ROOT.id, ROOT.author, 1, 0, {**g, "members": [b"x"]}) is None
    assert root_from_content(ROOT.id, ROOT.author, 1, 0, {"type": "post", "title": "t"}) is None


def test_long_cycle_terminates_and_keeps_author_order() -> None:
    # Every post of A names the next one (forged); B's posts name A's in a ring.
    n = 50
    a_refs = [MsgRef(h("author:A"), i + 1, h(f"a{i}")) for i in range(n)]
    msgs = [
        post(f"a{i}", "A", i + 1, n - i, refs=[a_refs[(i + 1) % n]]) for i in range(n)
    ] + [post(f"b{i}", "B", i + 1, i, refs=[a_refs[(7 * i) % n]]) for i in range(n)]
    v = order_group(ROOT, msgs)
    _check_constraints(v)
    assert [e.message.seq for e in v.entries if e.message.author == h("author:A")] == list(
        range(1, n + 1)
    )
    assert v.entries[0].ignored_refs == (a_refs[1],)


def test_index_appends_without_recomputing_in_causal_order() -> None:
    root, history = simulate(random.Random(3), 5, 300, sync=1.0)
    index = GroupIndex(ROOT.id, root)
    for k, m in enumerate(history):
        index.add(m)
        if k % 50 == 0:
            assert index.entries() == order_group(root, history[: k + 1]).entries
    assert index.recomputations == 0
    assert index.view() == order_group(root, history)
    assert index.tips() == (history[-1].ref,)


def test_index_places_concurrent_posts_without_recomputing() -> None:
    history = simulate_rounds(random.Random(8), 6, 2000)
    index = GroupIndex(ROOT.id, ROOT)
    for k, m in enumerate(history):
        index.add(m)
        if k % 97 == 0:
            assert index.view() == order_group(ROOT, history[: k + 1])
    assert index.recomputations == 0
    assert index.view() == order_group(ROOT, history)


def test_index_late_post_named_by_a_present_one() -> None:
    # x names m before m arrives; m then names x, the only tip (a forged cycle). Appending m
    # would keep x's stale "missing" flag and miss the cycle: the index must recompute.
    m_ref = MsgRef(h("author:M"), 1, h("m"))
    x = post("x", "X", 1, 20, refs=[m_ref])
    m = post("m", "M", 1, 10, refs=[x.ref])
    index = GroupIndex(ROOT.id, ROOT)
    index.add(x)
    assert index.view().missing_refs == (m_ref,)
    index.add(m)
    assert index.view() == order_group(ROOT, [x, m])
    assert index.view().order == (m.id, x.id) and index.view().missing == ()
    assert index.recomputations == 1


def test_index_root_later_and_duplicates() -> None:
    _, history = simulate(random.Random(4), 3, 30)
    index = GroupIndex(ROOT.id)
    index.update(history)
    index.update(history[:5])
    assert len(index) == len(history) and history[0].id in index and index.root is None
    assert index.view() == order_group(None, history)
    index.set_root(ROOT)
    index.set_root(ROOT)
    assert index.view() == order_group(ROOT, history)
    with pytest.raises(LocalError):
        index.set_root(GroupRoot(ROOT.id, ROOT.author, 1, 0, "forged", None))


def test_order_of_10000_messages_is_fast() -> None:
    history = simulate_rounds(random.Random(5), 20, 10_000)
    shuffled = list(history)
    random.Random(6).shuffle(shuffled)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        view = order_group(ROOT, shuffled)
        times.append(time.perf_counter() - t)
    assert len(view.entries) == 10_000
    _check_constraints(view, honest=True)
    # The target is well under 0.1 s (about 0.03 s here); this bound only catches blow-ups.
    assert min(times) < 0.5, times


# --- simulated conversations --------------------------------------------------------------------


def simulate(
    rng: random.Random,
    n_authors: int,
    n_posts: int,
    *,
    sync: float = 0.5,
    reply_rate: float = 0.3,
) -> tuple[GroupRoot, list[GroupMessage]]:
    """A causally valid history: before each post its author syncs, from each other feed, a
    longer prefix with probability ``sync`` (all of it when ``sync`` is 1); refs are the
    author's tips of what it has."""
    authors = [h(f"sim-author-{i}") for i in range(n_authors)]
    feeds: list[list[GroupMessage]] = [[] for _ in authors]
    have = [[0] * n_authors for _ in authors]
    skew = [rng.randint(-5, 5) for _ in authors]
    clock = 1000
    history: list[GroupMessage] = []
    for k in range(n_posts):
        a = rng.randrange(n_authors)
        for b in range(n_authors):
            if b != a and feeds[b] and rng.random() < sync:
                new = len(feeds[b]) if sync >= 1 else rng.randint(have[a][b], len(feeds[b]))
                have[a][b] = new
        have[a][a] = len(feeds[a])
        known = [m for b in range(n_authors) for m in feeds[b][: have[a][b]]]
        refs = tips(GREF, known)
        reply = None
        if known and rng.random() < reply_rate:
            reply = rng.choice(known).ref
        clock += rng.randint(0, 2)
        seq = len(feeds[a]) + 1
        ts = clock + skew[a]
        msg_id = h(f"sim {k} {a} {seq} {ts} {[r.id.hex() for r in refs]}")
        m = GroupMessage(msg_id, authors[a], seq, ts, GREF, refs, reply, f"post {k}")
        feeds[a].append(m)
        history.append(m)
    return ROOT, history


def simulate_rounds(rng: random.Random, n_authors: int, n_posts: int) -> list[GroupMessage]:
    """A large causally valid history, cheaply: in each round 1-4 authors post concurrently,
    each having seen everything before the round, so refs are the previous round's posts."""
    authors = [h(f"round-author-{i}") for i in range(n_authors)]
    seqs = [0] * n_authors
    history: list[GroupMessage] = []
    previous: tuple[MsgRef, ...] = (GREF,)
    clock = 1000
    while len(history) < n_posts:
        clock += rng.randint(0, 20)
        now: list[GroupMessage] = []
        for a in rng.sample(range(n_authors), min(rng.randint(1, 4), n_posts - len(history))):
            seqs[a] += 1
            ts = clock + rng.randint(-30, 30)
            reply = rng.choice(history).ref if history and rng.random() < 0.2 else None
            msg_id = h(f"round {len(history)} {len(now)} {a}")
            now.append(GroupMessage(msg_id, authors[a], seqs[a], ts, GREF, previous, reply, ""))
        history.extend(now)
        previous = tuple(sorted((m.ref for m in now), key=lambda r: r.id))
    return history


def _check_constraints(view: GroupView, *, honest: bool = False) -> None:
    pos = {e.message.id: i for i, e in enumerate(view.entries)}
    assert len(pos) == len(view.entries)
    last: dict[bytes, int] = {}
    for i, e in enumerate(view.entries):
        m = e.message
        ignored = {r.id for r in e.ignored_refs}
        if honest:
            assert not ignored
        for r in m.refs if m.reply is None else (*m.refs, m.reply):
            if r.id in pos and r.id not in ignored:
                assert pos[r.id] < i
        assert last.get(m.author, 0) <= m.seq
        last[m.author] = m.seq


def _spec_order(
    msgs: list[GroupMessage],
) -> tuple[list[bytes], dict[bytes, set[MsgRef]], set[bytes]]:
    """spec/view.md §4 read literally, quadratic and independent of view.py: the order, the
    ignored references per post, and the ids of the tips."""
    posts = {m.id: m for m in msgs}
    names: list[tuple[bytes, bytes, MsgRef]] = []  # (earlier, later, the msgref)
    ignored: dict[bytes, set[MsgRef]] = {}
    for msg in posts.values():
        for r in msg.refs if msg.reply is None else (*msg.refs, msg.reply):
            if r.id == msg.id:
                ignored.setdefault(msg.id, set()).add(r)
            elif r.id in posts:
                names.append((r.id, msg.id, r))

    def by_author(n: bytes, m: bytes) -> bool:
        return posts[n].author == posts[m].author and posts[n].seq < posts[m].seq

    author_edges = {(n, m) for n in posts for m in posts if by_author(n, m)}
    edges = {(n, m) for n, m, _ in names} | author_edges
    reach = {n: {n} for n in posts}
    changed = True
    while changed:
        changed = False
        for n, m in edges:
            if not reach[m] <= reach[n]:
                reach[n] |= reach[m]
                changed = True
    kept = set(author_edges)
    for n, m, r in names:
        same_component = n in reach[m] and m in reach[n]
        if not same_component or by_author(n, m):
            kept.add((n, m))
        else:
            ignored.setdefault(m, set()).add(r)
    order: list[bytes] = []
    while len(order) < len(posts):
        ready = [m for m in posts if m not in order and all(n in order for n, k in kept if k == m)]
        order.append(min(ready, key=lambda i: (posts[i].timestamp, i)))
    tips_ = {n for n in posts if not any(k == n for k, _ in kept)}
    return order, ignored, tips_


def _agrees_with_spec(view: GroupView, msgs: list[GroupMessage]) -> None:
    order, ignored, tips_ = _spec_order(msgs)
    assert list(view.order) == order
    assert {e.message.id: set(e.ignored_refs) for e in view.entries if e.ignored_refs} == ignored
    assert {r.id for r in view.tips} == tips_ or (not msgs and view.tips == (GREF,))


histories = st.builds(
    simulate,
    st.randoms(use_true_random=False),
    st.integers(3, 6),
    st.integers(0, 40),
    sync=st.sampled_from([0.2, 0.5, 0.9]),
)


@PROPS
@given(histories, st.randoms(use_true_random=False))
def test_order_is_a_function_of_the_set(
    history: tuple[GroupRoot, list[GroupMessage]], rng: random.Random
) -> None:
    root, msgs = history
    full = order_group(root, msgs)
    # (c) references and author order respected; (d) nothing lost or repeated.
    _check_constraints(full, honest=True)
    _agrees_with_spec(full, msgs)
    assert sorted(full.order) == sorted(m.id for m in msgs)
    assert full.complete
    # (a) any arrival order, with repeats, gives the same view.
    shuffled = msgs + rng.sample(msgs, len(msgs) // 3)
    rng.shuffle(shuffled)
    assert order_group(root, shuffled) == full
    assert order_group(root, reversed(msgs)) == full


@PROPS
@given(histories, st.randoms(use_true_random=False), st.integers(2, 3))
def test_split_across_nodes_then_merged(
    history: tuple[GroupRoot, list[GroupMessage]], rng: random.Random, n_nodes: int
) -> None:
    root, msgs = history
    full = order_group(root, msgs)
    nodes: list[list[GroupMessage]] = [[] for _ in range(n_nodes)]
    for m in msgs:
        holders = rng.sample(range(n_nodes), rng.randint(1, n_nodes))
        for n in holders:
            nodes[n].append(m)
    all_ids = {m.id for m in msgs}
    for part in nodes:
        view = order_group(root if rng.random() < 0.8 else None, part)
        _check_constraints(view, honest=True)
        assert len(view.entries) == len(part)
        # Whatever a node misses is reported, and exists.
        assert {r.id for r in view.missing_refs} <= all_ids | {ROOT.id}
    # (b) after merging, every node computes the full order, and so do indexes fed node by node.
    merged = [m for part in nodes for m in part]
    assert order_group(root, merged) == full
    index = GroupIndex(ROOT.id, root)
    for part in nodes:
        index.update(part)
        index.view()
    assert index.view() == full


@PROPS
@given(histories, st.randoms(use_true_random=False))
def test_index_in_any_order_equals_order_group(
    history: tuple[GroupRoot, list[GroupMessage]], rng: random.Random
) -> None:
    root, msgs = history
    arrival = list(msgs)
    if rng.random() < 0.5:
        rng.shuffle(arrival)
    index = GroupIndex(ROOT.id, root)
    for k, m in enumerate(arrival):
        index.add(m)
        if rng.random() < 0.3:  # reads between adds exercise the append path after a recompute
            assert index.view() == order_group(root, arrival[: k + 1])
    assert index.view() == order_group(root, msgs)


@st.composite
def forged_sets(draw: st.DrawFn) -> list[GroupMessage]:
    """Arbitrary, mostly dishonest posts: refs and replies to any id (later ones, itself, absent
    ones), claimed timestamps that ignore causality, and now and then a forked seq."""
    n = draw(st.integers(1, 25))
    authors = draw(st.integers(1, 4))
    specs = [
        (draw(st.integers(0, authors - 1)), draw(st.integers(1, 6)), draw(st.integers(0, 9)))
        for _ in range(n)
    ]
    refs_of = [draw(st.lists(st.integers(0, n + 2), max_size=3)) for _ in range(n)]
    replies = [draw(st.none() | st.integers(0, n + 2)) for _ in range(n)]

    def target(k: int) -> MsgRef:
        if k >= n:
            return MsgRef(h("author:ghost"), k, h(f"ghost {k}"))
        a, seq, _ = specs[k]
        return MsgRef(h(f"author:{a}"), seq, h(f"forged {k}"))

    out = []
    for k, (a, seq, ts) in enumerate(specs):
        reply = replies[k]
        out.append(
            GroupMessage(
                h(f"forged {k}"), h(f"author:{a}"), seq, ts, GREF,
                tuple(target(r) for r in refs_of[k]),
                None if reply is None else target(reply), "",
            )
        )
    return out


@PROPS
@given(forged_sets(), st.randoms(use_true_random=False))
def test_forged_references_still_give_one_order(
    msgs: list[GroupMessage], rng: random.Random
) -> None:
    full = order_group(ROOT, msgs)
    _check_constraints(full)
    _agrees_with_spec(full, msgs)
    assert sorted(full.order) == sorted(m.id for m in msgs)
    shuffled = list(msgs)
    rng.shuffle(shuffled)
    assert order_group(ROOT, shuffled) == full
    index = GroupIndex(ROOT.id, ROOT)
    for m in shuffled:
        index.add(m)
    assert index.view() == full
    assert full.tips  # a finite acyclic graph has a last post

"""Generate spec/vectors/view.json: group conversations and the order spec/view.md gives them.

Every id is sha256 of a label, so nothing is signed and nothing is random: the hand-made cases
are fixed, and the generated one draws from ``random.Random`` with a fixed seed. For each
hand-made case the expected order, missing references and tips are written here by hand and
checked against feedlog.core.view before anything is written, so the file records the rule, not
just what the code happened to do. The output is byte-stable (sorted keys, indent 1, trailing
newline).

    python spec/make_view_vectors.py           # (re)write spec/vectors/view.json
    python spec/make_view_vectors.py --check   # exit 1 if the file on disk differs
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vectorfile import write_or_check

from feedlog.core.view import (
    GroupMessage,
    GroupRoot,
    GroupView,
    MsgRef,
    order_group,
    tips,
)

OUT = Path(__file__).resolve().parent / "vectors" / "view.json"


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def author_id(name: str) -> bytes:
    return h("author:" + name)


@dataclass
class Post:
    label: str
    author: str
    timestamp: int
    refs: list[str]
    reply: str | None
    absent: bool


@dataclass
class Case:
    """A conversation written with labels; refs may name any label, even later ones (forgery)."""

    name: str
    description: str
    root_author: str = "A"
    root_present: bool = True
    posts: list[Post] = field(default_factory=list)
    seq_override: dict[str, int] = field(default_factory=dict)
    hints: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    input_order: list[str] | None = None  # labels, repeats allowed; default: declaration order

    def post(
        self,
        label: str,
        author: str,
        timestamp: int,
        refs: list[str],
        reply: str | None = None,
        *,
        absent: bool = False,
    ) -> None:
        self.posts.append(Post(label, author, timestamp, refs, reply, absent))

    def build(self) -> tuple[GroupRoot | None, MsgRef, list[GroupMessage], dict[str, MsgRef]]:
        refs: dict[str, MsgRef] = {}
        next_seq: dict[str, int] = {self.root_author: 2}
        root_ref = MsgRef(author_id(self.root_author), 1, h(f"{self.name}/root"))
        refs["root"] = root_ref
        for p in self.posts:
            seq = self.seq_override.get(p.label, next_seq.get(p.author, 1))
            next_seq[p.author] = seq + 1
            refs[p.label] = MsgRef(author_id(p.author), seq, h(f"{self.name}/{p.label}"))

        def named(by: str, label: str) -> MsgRef:
            real = refs[label]
            hint = self.hints.get((by, label))
            return real if hint is None else MsgRef(author_id(hint[0]), hint[1], real.id)

        messages: dict[str, GroupMessage] = {}
        for p in self.posts:
            me = refs[p.label]
            messages[p.label] = GroupMessage(
                me.id, me.author, me.seq, p.timestamp, root_ref,
                tuple(named(p.label, r) for r in p.refs),
                None if p.reply is None else named(p.label, p.reply),
                f"{p.label} says hello",
            )
        root = (
            GroupRoot(root_ref.id, root_ref.author, 1, 0, f"case {self.name}", None)
            if self.root_present
            else None
        )
        present = [p.label for p in self.posts if not p.absent]
        order = self.input_order if self.input_order is not None else present
        return root, root_ref, [messages[label] for label in order], refs


def hx(b: bytes) -> str:
    return b.hex()


def ref_json(r: MsgRef) -> dict[str, Any]:
    return {"author": hx(r.author), "seq": r.seq, "id": hx(r.id)}


def message_json(m: GroupMessage) -> dict[str, Any]:
    return {
        "id": hx(m.id),
        "author": hx(m.author),
        "seq": m.seq,
        "timestamp": m.timestamp,
        "group": ref_json(m.group),
        "refs": [ref_json(r) for r in m.refs],
        "reply": None if m.reply is None else ref_json(m.reply),
        "text": m.text,
    }


def expected_json(view: GroupView) -> dict[str, Any]:
    return {
        "order": [hx(i) for i in view.order],
        "entries": [
            {
                "id": hx(e.message.id),
                "missing_refs": [ref_json(r) for r in e.missing_refs],
                "reply_missing": e.reply_missing,
                "ignored_refs": [ref_json(r) for r in e.ignored_refs],
            }
            for e in view.entries
        ],
        "tips": [ref_json(r) for r in view.tips],
        "missing": [
            {"author": hx(f.author), "max_seq": f.max_seq, "refs": [ref_json(r) for r in f.refs]}
            for f in view.missing
        ],
    }


def vector(
    root: GroupRoot | None,
    group: MsgRef,
    messages: list[GroupMessage],
    view: GroupView,
    name: str,
    description: str,
    labels: dict[str, MsgRef],
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "root": None
        if root is None
        else {
            "id": hx(root.id),
            "author": hx(root.author),
            "seq": root.seq,
            "timestamp": root.timestamp,
            "title": root.title,
        },
        "group": ref_json(group),
        "messages": [message_json(m) for m in messages],
        "labels": {hx(r.id): label for label, r in labels.items()},
        "expected": expected_json(view),
    }


@dataclass
class Expect:
    order: list[str]
    tips: list[str]
    missing: list[str] = field(default_factory=list)  # labels of absent messages named
    flagged: dict[str, tuple[list[str], bool, list[str]]] = field(default_factory=dict)


def by_id(labels: list[str], refs: dict[str, MsgRef]) -> list[str]:
    return sorted(labels, key=lambda label: refs[label].id)


def hand_cases() -> list[tuple[Case, Expect | None]]:
    out: list[tuple[Case, Expect | None]] = []

    c = Case("linear", "a chain across three authors, given in reverse; c1's clock is behind a2's")
    c.post("a1", "A", 1100, ["root"])
    c.post("b1", "B", 1200, ["a1"])
    c.post("a2", "A", 1300, ["b1"])
    c.post("c1", "C", 1250, ["a2"])
    c.input_order = ["c1", "a2", "b1", "a1"]
    out.append((c, Expect(["a1", "b1", "a2", "c1"], ["c1"])))

    c = Case("concurrent-tie", "three posts on the root at one timestamp (ordered by id), a "
             "longer branch, and a merge")
    c.post("a1", "A", 2000, ["root"])
    c.post("b1", "B", 2000, ["root"])
    c.post("c1", "C", 2000, ["root"])
    c.post("b2", "B", 2050, ["b1"])
    c.post("a2", "A", 2100, ["a1", "b2", "c1"])
    c.input_order = ["a2", "c1", "b2", "a1", "b1"]
    _, _, _, refs = c.build()
    out.append((c, Expect([*by_id(["a1", "b1", "c1"], refs), "b2", "a2"], ["a2"])))

    c = Case("reply-earlier", "b2 answers a1 while referencing c1; d1 answers b1 but names only "
             "the root in refs, and its reply still orders it after b1")
    c.post("a1", "A", 100, ["root"])
    c.post("b1", "B", 200, ["a1"])
    c.post("c1", "C", 300, ["b1"])
    c.post("d1", "D", 150, ["root"], reply="b1")
    c.post("b2", "B", 400, ["c1"], reply="a1")
    c.input_order = ["b2", "d1", "c1", "b1", "a1"]
    out.append((c, Expect(["a1", "b1", "d1", "c1", "b2"], by_id(["b2", "d1"], c.build()[3]))))

    c = Case("missing-ref", "B's seq 1 and 2 are absent: c1 and b3 are shown, flagged and placed "
             "by timestamp; fetch B up to seq 2")
    c.post("a1", "A", 100, ["root"])
    c.post("b1", "B", 200, ["a1"], absent=True)
    c.post("b2", "B", 300, ["b1"], absent=True)
    c.post("b3", "B", 400, ["b2"])
    c.post("c1", "C", 50, ["b1"])
    c.post("a2", "A", 500, ["b3", "c1"])
    out.append((c, Expect(
        ["c1", "a1", "b3", "a2"], ["a2"], ["b1", "b2"],
        {"c1": (["b1"], False, []), "b3": (["b2"], False, [])},
    )))

    c = Case("missing-root", "the root is absent: posts are ordered anyway and the root is "
             "reported missing")
    c.root_present = False
    c.post("a1", "A", 100, ["root"])
    c.post("b1", "B", 90, ["a1"])
    out.append((c, Expect(["a1", "b1"], ["b1"], ["root"], {"a1": (["root"], False, [])})))

    c = Case("duplicate", "the same messages given more than once appear once")
    c.post("a1", "A", 100, ["root"])
    c.post("b1", "B", 50, ["a1"])
    c.input_order = ["b1", "a1", "a1", "b1", "a1"]
    out.append((c, Expect(["a1", "b1"], ["b1"])))

    c = Case("self-reference", "b1 names itself in refs and c1 answers itself (forged ids): "
             "both references are ignored")
    c.post("a1", "A", 100, ["root"])
    c.post("b1", "B", 200, ["a1", "b1"])
    c.post("c1", "C", 150, ["root"], reply="c1")
    out.append((c, Expect(
        ["a1", "c1", "b1"], by_id(["b1", "c1"], c.build()[3]), [],
        {"b1": ([], False, ["b1"]), "c1": ([], False, ["c1"])},
    )))

    c = Case("author-order", "A's clock went back: a2 is older than a1 by timestamp and names "
             "only the root, yet comes after a1 (and after b1, which a1 outranks no more)")
    c.post("a1", "A", 500, ["root"])
    c.post("a2", "A", 100, ["root"])
    c.post("b1", "B", 300, ["root"])
    c.input_order = ["a2", "b1", "a1"]
    out.append((c, Expect(["b1", "a1", "a2"], by_id(["a2", "b1"], c.build()[3]))))

    c = Case("forged-cycle", "b1 and c1 name each other (forged ids): the references inside the "
             "cycle are ignored; d1, outside it, still follows c1")
    c.post("a1", "A", 100, ["root"])
    c.post("b1", "B", 200, ["c1"])
    c.post("c1", "C", 300, ["b1"])
    c.post("d1", "D", 50, ["c1"])
    out.append((c, Expect(
        ["a1", "b1", "c1", "d1"], by_id(["a1", "b1", "d1"], c.build()[3]), [],
        {"b1": ([], False, ["c1"]), "c1": ([], False, ["b1"])},
    )))

    c = Case("forged-forward-ref", "a1 names A's later a3 (forged): in the cycle this makes, "
             "author order is kept and a1's reference is ignored")
    c.post("a1", "A", 100, ["a3"])
    c.post("a2", "A", 200, ["a1"])
    c.post("a3", "A", 50, ["a2"])
    c.post("b1", "B", 75, ["root"])
    out.append((c, Expect(
        ["b1", "a1", "a2", "a3"], by_id(["a3", "b1"], c.build()[3]), [],
        {"a1": ([], False, ["a3"])},
    )))

    c = Case("reply-missing", "a1 answers the root (present); b1 answers an absent message of C "
             "at seq 7")
    c.post("a1", "A", 100, ["root"], reply="root")
    c.post("c7", "C", 60, ["root"], absent=True)
    c.seq_override["c7"] = 7
    c.post("b1", "B", 90, ["a1"], reply="c7")
    out.append((c, Expect(["a1", "b1"], ["b1"], ["c7"], {"b1": ([], True, [])})))

    c = Case("hint-mismatch", "b1 names a1 by its id with a wrong author and seq: a reference is "
             "satisfied by id alone")
    c.post("a1", "A", 100, ["root"])
    c.post("b1", "B", 10, ["a1"])
    c.hints[("b1", "a1")] = ("C", 9)
    out.append((c, Expect(["a1", "b1"], ["b1"])))

    c = Case("fork", "B signed two messages at seq 2 (a fork): both follow b1 and precede b3")
    c.post("b1", "B", 100, ["root"])
    c.post("b2x", "B", 300, ["b1"])
    c.post("b2y", "B", 200, ["b1"])
    c.post("b3", "B", 150, ["b2x", "b2y"])
    c.seq_override["b2y"] = 2
    c.seq_override["b3"] = 3
    out.append((c, Expect(["b1", "b2y", "b2x", "b3"], ["b3"])))
    return out


def random_case(seed: int, n_authors: int, n_posts: int) -> Case:
    """Authors post in turns, each having synced a random prefix of every other feed, with refs
    set to their own tips; a few messages are then left out and the input shuffled."""
    rng = random.Random(seed)
    names = [chr(ord("A") + i) for i in range(n_authors)]
    c = Case(f"random-{seed}", f"seeded simulation: {n_authors} authors, {n_posts} posts, some "
             "absent, input shuffled")
    feeds: dict[str, list[str]] = {n: [] for n in names}
    known: dict[str, dict[str, int]] = {n: {m: 0 for m in names} for n in names}
    clock = 1000
    for _ in range(n_posts):
        who = rng.choice(names)
        for other in names:
            if other != who and rng.random() < 0.5:
                known[who][other] = rng.randint(known[who][other], len(feeds[other]))
        known[who][who] = len(feeds[who])
        seen = [label for n in names for label in feeds[n][: known[who][n]]]
        _, root_ref, msgs, refs = c.build()
        have = [m for m in msgs if refs_label(refs, m.id) in seen]
        tip_labels = [refs_label(refs, r.id) for r in tips(root_ref, have)]
        reply = rng.choice(seen) if seen and rng.random() < 0.3 else None
        clock += rng.randint(0, 3)
        label = f"{who.lower()}{len(feeds[who]) + 1}"
        c.post(label, who, clock + rng.randint(-2, 2), tip_labels, reply)
        feeds[who].append(label)
    for p in c.posts:
        if rng.random() < 0.1:
            p.absent = True
    order = [p.label for p in c.posts if not p.absent]
    rng.shuffle(order)
    c.input_order = order
    return c


def refs_label(refs: dict[str, MsgRef], msg_id: bytes) -> str:
    for label, r in refs.items():
        if r.id == msg_id:
            return label
    raise KeyError(msg_id.hex())


def check(case: Case, expect: Expect, view: GroupView, refs: dict[str, MsgRef]) -> None:
    name = {r.id: label for label, r in refs.items()}
    problems = []
    got = [name[i] for i in view.order]
    if got != expect.order:
        problems.append(f"order {got} != {expect.order}")
    got_tips = [name[r.id] for r in view.tips]
    if got_tips != expect.tips:
        problems.append(f"tips {got_tips} != {expect.tips}")
    got_missing = sorted(name[r.id] for r in view.missing_refs)
    if got_missing != sorted(expect.missing):
        problems.append(f"missing {got_missing} != {expect.missing}")
    for e in view.entries:
        label = name[e.message.id]
        flags = (
            [name[r.id] for r in e.missing_refs], e.reply_missing,
            [name[r.id] for r in e.ignored_refs],
        )
        if flags != expect.flagged.get(label, ([], False, [])):
            problems.append(f"flags of {label}: {flags}")
    if problems:
        raise SystemExit(f"case {case.name}: " + "; ".join(problems))


def render() -> str:
    cases: list[tuple[Case, Expect | None]] = [*hand_cases(), (random_case(7, 4, 30), None)]
    vectors = []
    for case, expect in cases:
        root, group, messages, refs = case.build()
        view = order_group(root, messages)
        if expect is not None:
            check(case, expect, view, refs)
        vectors.append(vector(root, group, messages, view, case.name, case.description, refs))
    doc = {
        "description": "Group order vectors (spec/view.md). Ids are sha256 of labels; 'labels' "
        "maps ids to them for reading. Feed order_group(root, messages) and compare 'expected'.",
        "msgref": "{author, seq, id}; ids and authors are 32 bytes in hex",
        "cases": vectors,
    }
    return json.dumps(doc, sort_keys=True, indent=1) + "\n"


def main() -> int:
    return write_or_check(OUT, render(), description=__doc__)


if __name__ == "__main__":
    sys.exit(main())

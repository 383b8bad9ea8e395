"""The compiled core (feedlog/native.py, setup.py): built where it can be, really in use, kept
in step with its source, and answering exactly as the Python source does on hostile input."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
from typing import Any

import cbor2

from feedlog import native
from feedlog.bench_replication import _feeds
from feedlog.core import bundle, wire
from feedlog.core.message import CONTENT_TAG, encode_header, encode_message
from feedlog.core.validate import decode_message
from tests.conftest import REPO

# Decodes the corpus the test passes on stdin with each stage of the compiled core and prints
# one digest per stage of every outcome: value or error code.
_DIGEST = r"""
import hashlib, json, sys
import feedlog
from feedlog import native
from feedlog.core import bundle, encoding, validate, wire
from feedlog.core.errors import FeedlogError

def outcome(fn, data):
    try:
        return repr(fn(data))
    except FeedlogError as exc:  # anything else escapes: a decoder bug in either form
        return "error " + exc.code

corpus = [bytes.fromhex(h) for h in json.load(sys.stdin)]

def message(d):
    m = validate.decode_message(d)
    return (m.id, m.author, m.seq, m.previous, m.timestamp, m.content, m.value)

def segment(d):
    s = bundle.scan(d)
    return ("damaged" if s.damage else "clean", s.consumed, [tuple(r) for r in s.records],
            [(x.offset, x.length, x.code) for x in s.damage])

def summary(d):
    s = bundle.decode_summary(d)
    return (sorted(s.segments.items()), sorted(s.feeds.items()), s.forks)

stages = {
    "summary": summary,
    "message": message,
    "strict": lambda d: encoding.decode_strict(d),
    "frame": lambda d: wire.decode_body(d),
    "segment": segment,
}
out = {}
for k, f in stages.items():
    got = [outcome(f, d) for d in corpus]
    bad = sum(g.startswith(("error ", "('damaged'")) for g in got)
    out[k] = [hashlib.sha256("\n".join(got).encode()).hexdigest(), len(got) - bad, bad]
out["compiled"] = native.status()
print(json.dumps(out))
"""


def _corpus(n: int = 6000) -> list[bytes]:
    """Valid messages, MSGS frame bodies and bundle segments, and the same bytes cut,
    extended and with bytes changed."""
    rng = random.Random(7)
    raws = [m.raw for f in _feeds(200, feeds=4) for m in f]
    seeds = list(raws)
    for i in range(0, len(raws), 5):
        seeds += [f[wire.LENGTH_SIZE:] for f in wire.msgs_frames(raws[i : i + 5])]
        seeds.append(b"".join(bundle.encode_record(bundle.KIND_MESSAGE, r)
                              for r in raws[i : i + 3]))
    m = decode_message(raws[-1])
    for i in range(1, 40):  # bundle summaries, valid before mutation
        feed = bundle.FeedSummary(m.author, 1, i, m.id, (bundle.Extent(1, 0, 100 * i, 1, i),))
        fork = bundle.ForkEntry(m.author, i, 1, 9, 50)
        seeds.append(bundle.encode_summary(bundle.Summary(
            {1: 100 * i, 2: i}, {m.author: feed} if i % 2 else {}, (fork,) if i % 3 else ())))
    out = list(seeds) + _structured(rng, raws[0])
    while len(out) < n:
        b = bytearray(rng.choice(seeds))
        kind = rng.randrange(4)
        if kind == 0:
            del b[rng.randrange(len(b)):]
        elif kind == 1:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        out.append(bytes(b))
    return out


def _value(rng: random.Random, depth: int = 0) -> object:
    """A random CBOR value of the kinds feedlog's decoders meet (and some they refuse)."""
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return rng.choice([None, True, False, 1.5])
    if kind in (1, 2):
        return rng.choice([0, 1, 23, 24, 255, 256, 2**32, 2**63 - 1, 2**64 - 1, -1, -2**63,
                           rng.randrange(-2**70, 2**70)])
    if kind in (3, 4):
        return rng.choice(["", "post", "type", "text", "x" * rng.randrange(40), "\u00e9"])
    if kind in (5, 6):
        return rng.randbytes(rng.choice([0, 1, 8, 32, 64]))
    if kind in (7, 8):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = ["type", "text", "format", "version", "segments", "feeds", "forks", "x"]
    d: dict[object, object] = {rng.choice(keys): _value(rng, depth + 1)
                               for _ in range(rng.randrange(5))}
    if rng.randrange(4) == 0:
        d["type"] = rng.choice(["post", "contact", "about", "x" * 70, 7])
    return d


def _structured(rng: random.Random, sample: bytes) -> list[bytes]:
    """Well-formed containers holding random values: messages whose header matches a random
    content (so the content parser is reached), and frames and bundle summaries of any type."""
    m = decode_message(sample)
    out = []
    for _ in range(600):
        content = cbor2.dumps(_value(rng), canonical=True)
        header = encode_header(m.author, m.seq, m.previous, m.timestamp, len(content),
                               hashlib.sha256(CONTENT_TAG + content).digest())
        out.append(encode_message(header, m.signature, content))
        out.append(cbor2.dumps([rng.randrange(8), *(_value(rng, 1)
                                                    for _ in range(rng.randrange(5)))]))
        out.append(cbor2.dumps(_value(rng, 2) if rng.randrange(2) else {
            "format": bundle.FORMAT, "version": bundle.VERSION, "segments": _value(rng, 2),
            "feeds": _value(rng, 2), "forks": _value(rng, 2)}, canonical=True))
    return out


def _run(pure: bool, corpus: list[bytes]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    proc = subprocess.run([sys.executable, "-c", _DIGEST], env=env, cwd=REPO, check=True,
                          input=json.dumps([d.hex() for d in corpus]), capture_output=True,
                          text=True, timeout=120)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_compiled_and_python_source_give_the_same_answers() -> None:
    corpus = _corpus()
    pure, here = _run(True, corpus), _run(False, corpus)
    assert pure.pop("compiled") == {name: False for name in native.COMPILED}
    assert here.pop("compiled") == _built()  # what this tree has compiled is what ran
    assert here == pure
    for stage, counts in pure.items():
        _, accepted, refused = counts
        assert accepted >= 20 and refused >= 100, (stage, accepted, refused)
    assert len({hashlib.sha256(d).digest() for d in corpus}) > 5000


def test_pure_env_loads_the_source_and_nothing_else() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import feedlog, feedlog.native as n; print(n.summary())"],
        env={**os.environ, native.PURE_ENV: "1"}, capture_output=True, text=True, check=True)
    assert re.search(r"0 of \d+ hot modules compiled \(FEEDLOG_PURE set\)", out.stdout), out


def _built() -> dict[str, bool]:
    """Each compiled-core module -> whether an extension of it sits beside its source."""
    return {name: bool(native.built(name)[1]) for name in native.COMPILED}


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def test_the_core_is_compiled_where_a_compiler_is() -> None:
    """What `make bench` measures: without this, a broken build would silently run (and
    benchmark) the Python source."""
    if native.pure_requested():
        assert not any(native.status().values())
        return
    built = _built()
    st = native.status()
    for name in native.COMPILED:
        assert st[name] == built[name], f"{name}: built {built[name]}, in use {st[name]}"
    if _compiler() is not None:
        assert all(built.values()), f"a C compiler is here but not all were compiled: {built}"


def test_the_makefile_rebuilds_when_any_compiled_source_changes() -> None:
    text = (REPO / "Makefile").read_text()
    m = re.search(r"^NATIVE_SRC := ((?:.*\\\n)*.*)$", text, re.M)
    assert m is not None
    listed = set(m.group(1).replace("\\\n", " ").split())
    wanted = {name.replace(".", "/") + ".py" for name in native.COMPILED}
    assert wanted | {"setup.py", "feedlog/native.py"} <= listed


def test_a_stale_extension_stops_the_suite() -> None:
    """tests/conftest.py refuses to run on an extension older than its edited source."""
    from tests import conftest

    source, exts = native.built(native.COMPILED[0])
    if not exts:  # nothing compiled in this tree: nothing can be stale
        assert conftest.stale_compiled() == []
        return
    st = exts[0].stat()
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    try:
        os.utime(exts[0], (st.st_atime, source.stat().st_mtime - 10))
        assert any(exts[0].name in s for s in conftest.stale_compiled())
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
             "tests/test_native.py::test_pure_env_loads_the_source_and_nothing_else"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "stale compiled modules" in run.stdout + run.stderr, run
    finally:
        os.utime(exts[0], (st.st_atime, st.st_mtime))
    assert conftest.stale_compiled() == []


def test_no_compiled_loop_bound_changes_inside_its_loop() -> None:
    """Compiled, ``for _ in range(n)`` reads ``n`` again at every turn; Python evaluates it
    once. A body that assigns a name of the bound would behave differently compiled (it did
    once: encoding._parse_item reused ``n`` for a text length)."""
    found = []
    for name in native.COMPILED:
        path = REPO / (name.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
                    and isinstance(node.iter.func, ast.Name) and node.iter.func.id == "range"):
                continue
            bound = {n.id for a in node.iter.args for n in ast.walk(a)
                     if isinstance(n, ast.Name)}
            stored = {n.id for stmt in node.body for n in ast.walk(stmt)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            if bound & stored:
                found.append(f"{path.name}:{node.lineno} {sorted(bound & stored)}")
    assert found == []

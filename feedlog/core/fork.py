"""Fork proofs (spec/feed.md §8).

A fork proof is two messages, both validly signed by the same author, that cannot both belong to
one feed:

- ``same-seq``: the same seq and different ids; or
- ``broken-link``: consecutive seqs where the later one's previous is not the earlier one's id.

Either pair proves the author signed two diverging chains. The proof verifies itself: anyone can
check it from the two messages alone, without trusting whoever handed it over. The pair is kept
in a canonical order (``same-seq``: smaller id first; ``broken-link``: lower seq first) so one
fork has one encoded proof.
"""

from __future__ import annotations

from dataclasses import dataclass

from feedlog.core import encoding
from feedlog.core.errors import InvalidMessage
from feedlog.core.ids import FeedId
from feedlog.core.message import Message
from feedlog.core.validate import check_signature, decode_message

SAME_SEQ = "same-seq"
BROKEN_LINK = "broken-link"


@dataclass(frozen=True, slots=True)
class ForkProof:
    author: FeedId
    seq: int  # the first seq at which the two chains differ at the latest
    kind: str
    first: Message
    second: Message

    def encode(self) -> bytes:
        """Canonical CBOR array [first message bytes, second message bytes]."""
        return encoding.encode([self.first.raw, self.second.raw])


def make_fork_proof(a: Message, b: Message) -> ForkProof:
    """Check that ``a`` and ``b`` prove a fork; raise InvalidMessage ``bad-fork-proof`` if not.

    Both signatures are verified here, so the caller need not trust where the pair came from.
    """
    if a.author != b.author:
        raise InvalidMessage("fork proof messages have different authors", code="bad-fork-proof")
    if a.seq == b.seq:
        if a.id == b.id:
            raise InvalidMessage("fork proof messages are the same message",
                                 code="bad-fork-proof")
        first, second = (a, b) if a.id < b.id else (b, a)
        kind, seq = SAME_SEQ, a.seq
    else:
        lo, hi = (a, b) if a.seq < b.seq else (b, a)
        if hi.seq != lo.seq + 1 or hi.previous == lo.id:
            raise InvalidMessage("fork proof messages do not conflict", code="bad-fork-proof")
        first, second, kind, seq = lo, hi, BROKEN_LINK, lo.seq
    for m in (first, second):
        check_signature(m)
    return ForkProof(author=first.author, seq=seq, kind=kind, first=first, second=second)


def decode_fork_proof(data: bytes) -> ForkProof:
    """Decode and verify an encoded fork proof."""
    value = encoding.decode_fixed(data, what="fork proof")
    if type(value) is not list or len(value) != 2 or not all(type(v) is bytes for v in value):
        raise InvalidMessage("a fork proof is an array of two messages", code="bad-fork-proof")
    proof = make_fork_proof(decode_message(value[0]), decode_message(value[1]))
    if proof.encode() != data:
        raise InvalidMessage("fork proof messages are not in canonical order",
                             code="non-canonical")
    return proof

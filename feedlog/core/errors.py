"""One error tree with stable codes (spec/feed.md §8 lists every code).

FeedlogError
  LocalError        the caller misused feedlog (bad id on the command line, no identity, ...)
  RemoteError       a peer or a file misbehaved; never crashes the node
    InvalidMessage  a message failed validation; ``fatal`` says whether to stop taking the
                    feed from that source (forged signature, fork) or just skip it (duplicate)
    HandshakeError  the secret handshake failed
    ProtocolError   a framing or replication rule was broken
  StoreError        the local store cannot do what was asked (corrupt, full disk, read-only)

Callers, tests, logs and spec vectors match on ``code``, never on message text.
"""

from __future__ import annotations


class FeedlogError(Exception):
    """Base of every error feedlog raises on purpose."""

    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class LocalError(FeedlogError):
    """The caller asked for something invalid."""

    code = "local-error"


class RemoteError(FeedlogError):
    """A peer, a file or a stick sent something invalid."""

    code = "remote-error"


class InvalidMessage(RemoteError):
    """A message failed validation.

    ``fatal`` errors (forged signature, fork, broken chain) mean the source cannot be trusted for
    this feed any more; benign ones (duplicate, gap) mean "skip this one".
    """

    code = "invalid-message"

    def __init__(self, message: str = "", *, code: str | None = None, fatal: bool = True) -> None:
        super().__init__(message, code=code)
        self.fatal = fatal


class HandshakeError(RemoteError):
    """The secret handshake failed; the connection must be closed without sending more."""

    code = "handshake-failed"


class ProtocolError(RemoteError):
    """A transport or replication rule was broken by the other side."""

    code = "protocol-error"


class StoreError(FeedlogError):
    """The local store failed (corrupt, foreign, full, read-only)."""

    code = "store-error"

"""Public re-export of the error tree (defined in the pure core)."""

from feedlog.core.errors import (
    FeedlogError,
    HandshakeError,
    InvalidMessage,
    LocalError,
    ProtocolError,
    RemoteError,
    StoreError,
)

__all__ = [
    "FeedlogError",
    "HandshakeError",
    "InvalidMessage",
    "LocalError",
    "ProtocolError",
    "RemoteError",
    "StoreError",
]

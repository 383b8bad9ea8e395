"""Stores: the contract (base), an in-memory twin and SQLite."""

from feedlog.store.base import ContactRow, FeedInfo, PeerRecord, Store
from feedlog.store.memory import MemoryStore
from feedlog.store.sqlite import SqliteStore

__all__ = ["ContactRow", "FeedInfo", "MemoryStore", "PeerRecord", "SqliteStore", "Store"]

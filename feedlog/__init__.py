"""feedlog: per-author append-only signed logs, replicated over TCP, LAN and USB sticks.

    import asyncio, feedlog

    async def main() -> None:
        node = await feedlog.Node.open(feedlog.default_home())
        msg = await node.publish("hello")
        print(feedlog.msg_id_text(msg.id))
        await node.close()
"""

from feedlog.core.errors import (
    FeedlogError,
    HandshakeError,
    InvalidMessage,
    LocalError,
    ProtocolError,
    RemoteError,
    StoreError,
)
from feedlog.core.ids import feed_id_text, msg_id_text, parse_feed_id, parse_msg_id
from feedlog.core.message import Message
from feedlog.identity import default_home
from feedlog.node import Node, VerifyReport

__version__ = "0.1.0"

__all__ = [
    "FeedlogError",
    "HandshakeError",
    "InvalidMessage",
    "LocalError",
    "Message",
    "Node",
    "ProtocolError",
    "RemoteError",
    "StoreError",
    "VerifyReport",
    "default_home",
    "feed_id_text",
    "msg_id_text",
    "parse_feed_id",
    "parse_msg_id",
]

"""feedlog: per-author append-only signed logs, replicated over TCP, LAN and USB sticks.

    import asyncio, feedlog

    async def main() -> None:
        node = await feedlog.Node.open(feedlog.default_home())
        msg = await node.publish("hello")
        print(feedlog.msg_id_text(msg.id))
        await node.close()
"""

from feedlog import native as _native

_native.install_pure_finder()  # before anything imports the compiled core (FEEDLOG_PURE)

from feedlog.core.errors import (  # noqa: E402
    FeedlogError,
    HandshakeError,
    InvalidMessage,
    LocalError,
    ProtocolError,
    RemoteError,
    StoreError,
)
from feedlog.core.ids import feed_id_text, msg_id_text, parse_feed_id, parse_msg_id  # noqa: E402
from feedlog.core.message import Message  # noqa: E402
from feedlog.identity import default_home  # noqa: E402
from feedlog.node import Node, VerifyReport  # noqa: E402

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

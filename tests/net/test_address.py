"""``feedlog://HOST:PORT/FEED_ID``, what `serve` prints and `sync` takes (net/transport.py)."""

from __future__ import annotations

import pytest

from feedlog.core.errors import FeedlogError
from feedlog.core.ids import FeedId, feed_id_text
from feedlog.net.transport import Address
from tests.conftest import keypair

FEED = FeedId(keypair("address").public)
ID = feed_id_text(FEED)


@pytest.mark.parametrize("host", ["127.0.0.1", "laptop.local", "::1", "fe80::1%eth0"])
def test_an_address_reads_back_as_printed(host: str) -> None:
    a = Address(host, 8008, FEED)
    assert Address.parse(str(a)) == a
    assert Address.parse(f"  {a}\n") == a  # pasted with blanks around it


def test_the_scheme_is_case_insensitive_and_may_be_left_out() -> None:
    want = Address("10.0.0.2", 8008, FEED)
    for text in (f"feedlog://10.0.0.2:8008/{ID}", f"FEEDLOG://10.0.0.2:8008/{ID}",
                 f"FeedLog://10.0.0.2:8008/{ID}", f"10.0.0.2:8008/{ID}"):
        assert Address.parse(text) == want, text


@pytest.mark.parametrize("text", [
    "not an address", f"http://10.0.0.2:8008/{ID}", f"feedlog://10.0.0.2/{ID}",
    f"feedlog://10.0.0.2:0/{ID}", f"feedlog://10.0.0.2:65536/{ID}", "feedlog://10.0.0.2:8008/",
    f"feedlog://[::1:8008/{ID}",
])
def test_what_is_not_an_address_is_refused_with_a_code(text: str) -> None:
    with pytest.raises(FeedlogError) as e:
        Address.parse(text)
    assert e.value.code == "bad-address"


def test_a_bad_feed_id_in_an_address_is_bad_id() -> None:
    with pytest.raises(FeedlogError) as e:
        Address.parse("feedlog://10.0.0.2:8008/feed_notanid")
    assert e.value.code == "bad-id"

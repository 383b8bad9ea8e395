"""Replication frames and the session (spec/replication.md): the vectors of
spec/vectors/replication.json checked against the code, and hostile input."""

from __future__ import annotations

import pytest

from feedlog.core.encoding import encode
from feedlog.core.errors import ProtocolError
from feedlog.core.wire import decode_body


@pytest.mark.parametrize("mode", [True, False])
def test_notes_mode_must_be_an_integer(mode: bool) -> None:
    # regression: True == 1 and False == 0 in Python, so a boolean slipped through as a mode
    with pytest.raises(ProtocolError) as exc:
        decode_body(encode([1, mode, True, []]))
    assert exc.value.code == "bad-frame"

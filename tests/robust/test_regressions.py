"""Regression tests for what the fuzzers and crash tests found (each names its finding)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from feedlog.core.crypto import Keypair
from feedlog.core.errors import FeedlogError, LocalError, StoreError
from feedlog.core.ids import feed_id_text
from feedlog.identity import decode_key_file, read_key, write_key
from tests.conftest import keypair


def test_deeply_nested_key_file_is_a_bad_key_file(tmp_path: Path) -> None:
    """Finding: read_key let json's RecursionError escape (a traceback instead of an error)."""
    p = tmp_path / "secret.json"
    p.write_text("[" * 100_000)
    p.chmod(0o600)
    with pytest.raises(LocalError) as e:
        read_key(p)
    assert e.value.code == "bad-key-file"


@pytest.mark.parametrize("doc", [
    '{"format": "feedlog-ed25519-v1", "seed": "%s"}',  # no id: a damaged seed would pass
    '{"format": "feedlog-ed25519-v1", "id": null, "seed": "%s"}',
    '{"format": "feedlog-ed25519-v1", "id": "x", "seed": "%s"}',
    '["feedlog-ed25519-v1", "%s"]',
    '{"format": "feedlog-ed25519-v1", "id": "x", "seed": " %s"}',
])
def test_key_file_must_name_its_id(doc: str) -> None:
    """Finding (mutation property): without a required id, one changed hex digit of the seed
    silently became another identity."""
    k = keypair("k")
    with pytest.raises(FeedlogError) as e:
        decode_key_file((doc % k.seed.hex()).encode())
    assert e.value.code == "bad-key-file"
    good = json.dumps({"format": "feedlog-ed25519-v1", "id": feed_id_text(k.public),
                       "seed": k.seed.hex()})
    assert decode_key_file(good.encode()).public == k.public


def test_key_write_failure_leaves_no_torn_key(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding (code review while writing the "init" crash scenario, whose kills rarely hit so
    narrow a window): the key was written in place, so a kill or a full disk between creating
    secret.json and writing it left an empty file that made the home unusable (bad-key-file)
    and init refuse to repair it (key-exists)."""
    k = Keypair.from_seed(bytes(range(32)))
    path = tmp_path / "secret.json"
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreError) as e:
        write_key(path, k)
    assert e.value.code == "disk-full"
    assert sorted(tmp_path.iterdir()) == []  # neither the key nor its temporary file
    monkeypatch.setattr(os, "write", real_write)
    write_key(path, k)
    assert read_key(path).public == k.public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]
    with pytest.raises(LocalError) as e2:
        write_key(path, keypair("other"))
    assert e2.value.code == "key-exists"
    assert read_key(path).public == k.public


def test_stale_temporary_key_file_is_replaced(tmp_path: Path) -> None:
    """A crash after the temporary file was written (but before it was linked) must not
    block the next init."""
    (tmp_path / "secret.json.tmp").write_text("half")
    k = keypair("after-crash")
    write_key(tmp_path / "secret.json", k)
    assert read_key(tmp_path / "secret.json").public == k.public
    assert not (tmp_path / "secret.json.tmp").exists()

"""feedlog/config.py: defaults, config.toml overrides, and refusals with codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedlog import Node
from feedlog.config import Limits, limits_as_dict, load_limits
from feedlog.core.errors import LocalError
from feedlog.store.sqlite import SqliteStore
from tests.e2e.test_cli import run


def test_defaults_are_sane() -> None:
    d = Limits()
    assert d.max_frame_size >= 64 * 1024  # room for a batch of 8 KiB messages
    assert d.max_vector_entries >= 10_000  # the "10,000 followed feeds" goal fits
    assert 0 < d.handshake_timeout < d.idle_timeout
    assert d.bundle_segment_size <= d.max_bundle_file_size < 4 * 1024**3  # FAT32
    assert d.max_store_bytes == 0
    with pytest.raises(AttributeError):
        d.max_frame_size = 1  # type: ignore[misc]


def test_no_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_limits(tmp_path) == Limits()
    assert load_limits(tmp_path / "missing") == Limits()


def test_overrides(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[limits]\nmax_concurrent_peers = 4\nhandshake_timeout = 3\nidle_timeout = 2.5\n")
    got = load_limits(tmp_path)
    assert got.max_concurrent_peers == 4
    assert got.handshake_timeout == 3.0 and isinstance(got.handshake_timeout, float)
    assert got.idle_timeout == 2.5
    assert got.max_frame_size == Limits().max_frame_size


@pytest.mark.parametrize("text,code", [
    ("[limits]\nmax_frame_size = 'big'\n", "config-bad-value"),
    ("[limits]\nmax_frame_size = 1.5e6\n", "config-bad-value"),  # sizes are whole numbers
    ("[limits]\nmax_frame_size = true\n", "config-bad-value"),
    ("[limits]\nmax_frame_size = 10\n", "config-bad-value"),  # below the floor
    # below what any sender may send: such a node would refuse conforming peers' MSGS frames
    ("[limits]\nmax_frame_size = 65536\n", "config-bad-value"),
    ("[limits]\nmax_concurrent_peers = -1\n", "config-bad-value"),
    ("[limits]\nidle_timeout = nan\n", "config-bad-value"),
    ("[limits]\nbundle_segment_size = 104857600\nmax_bundle_file_size = 1048576\n",
     "config-bad-value"),
    ("limits = 3\n", "config-bad-value"),
    ("[limits]\nmax_frame_sise = 100000\n", "config-unknown-key"),  # a typo is not ignored
    ("[network]\nport = 1\n", "config-unknown-key"),
    ("[limits\n", "config-unreadable"),
    ("\xff\xfe", "config-unreadable"),
])
def test_bad_config_is_refused_with_a_code(tmp_path: Path, text: str, code: str) -> None:
    (tmp_path / "config.toml").write_bytes(text.encode("latin-1"))
    with pytest.raises(LocalError) as e:
        load_limits(tmp_path)
    assert e.value.code == code


async def test_node_takes_its_limits_from_the_home(tmp_path: Path) -> None:
    node = await Node.init(tmp_path / "h")
    await node.close()
    (tmp_path / "h" / "config.toml").write_text("[limits]\nmax_concurrent_peers = 7\n")
    node = await Node.open(tmp_path / "h")
    assert node.limits.max_concurrent_peers == 7
    await node.close()
    (tmp_path / "h" / "config.toml").write_text("[limits]\nmax_concurrent_peers = 0\n")
    with pytest.raises(LocalError) as e:
        await Node.open(tmp_path / "h")
    assert e.value.code == "config-bad-value"


def test_cli_limits_and_bad_config(tmp_path: Path) -> None:
    h = tmp_path / "h"
    run(h, "init")
    shown = json.loads(run(h, "limits", "--json").stdout)
    assert shown == limits_as_dict(Limits())
    (h / "config.toml").write_text("[limits]\nidle_timeout = 30.0\n")
    assert "idle_timeout = 30.0" in run(h, "limits").stdout
    (h / "config.toml").write_text("[limits]\nidle_timeout = 'soon'\n")
    for args in (("limits",), ("publish", "x")):
        p = run(h, *args, ok=False)
        assert p.returncode == 2
        assert p.stderr.startswith("error[config-bad-value]: ") and len(
            p.stderr.strip().splitlines()) == 1


async def test_store_cache_size_sets_the_page_cache(tmp_path: Path) -> None:
    """The store's page cache is what bounds a node's memory: config.toml chooses it."""
    node = await Node.init(tmp_path)
    try:
        assert isinstance(node.store, SqliteStore)
        assert await node.store._scalar("PRAGMA cache_size") == -Limits().store_cache_size // 1024
    finally:
        await node.close()
    (tmp_path / "config.toml").write_text("[limits]\nstore_cache_size = 1048576\n")
    node = await Node.open(tmp_path)
    try:
        assert node.limits.store_cache_size == 1024 * 1024
        assert isinstance(node.store, SqliteStore)
        assert await node.store._scalar("PRAGMA cache_size") == -1024
    finally:
        await node.close()
    (tmp_path / "config.toml").write_text("[limits]\nstore_cache_size = 1000\n")
    with pytest.raises(LocalError) as e:
        await Node.open(tmp_path)
    assert e.value.code == "config-bad-value"

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from feedlog import native
from feedlog.core.crypto import Keypair

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def stale_compiled() -> list[str]:
    """Compiled core modules (feedlog/native.py) in this tree that are older than their
    source: Python would import the stale extension instead of the edited code."""
    stale = []
    for name in native.COMPILED:
        source, exts = native.built(name)
        for ext in exts:
            if ext.stat().st_mtime < source.stat().st_mtime:
                stale.append(f"{ext.relative_to(REPO)} (older than {source.name})")
    return stale


def pytest_configure(config: pytest.Config) -> None:
    if not native.pure_requested() and (stale := stale_compiled()):
        pytest.exit("stale compiled modules: " + ", ".join(stale) + "; rebuild them with "
                    "`make test` (or `pip install -e .`), or run with FEEDLOG_PURE=1", 2)


def keypair(label: str) -> Keypair:
    return Keypair.from_seed(hashlib.sha256(label.encode()).digest())


@pytest.fixture
def alice() -> Keypair:
    return keypair("alice")


@pytest.fixture
def bob() -> Keypair:
    return keypair("bob")

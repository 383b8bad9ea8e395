from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from feedlog.core.crypto import Keypair

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def keypair(label: str) -> Keypair:
    return Keypair.from_seed(hashlib.sha256(label.encode()).digest())


@pytest.fixture
def alice() -> Keypair:
    return keypair("alice")


@pytest.fixture
def bob() -> Keypair:
    return keypair("bob")

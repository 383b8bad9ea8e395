"""Fixtures of the whole-program tests: ``netns`` is the namespace test bed (netns.py)."""

from tests.e2e.netns import netns

__all__ = ["netns"]

"""The compiled core: which modules setup.py compiles with mypyc, and which run compiled here.

Every received message goes through the same few pure, sans-IO modules: the strict decoder,
canonical CBOR, replication frames, box-stream and bundle records. setup.py compiles them to C
extensions with mypyc when it can (a C compiler and mypyc at build time); their Python source
stays beside them and is the same code, run by the interpreter wherever they could not be
compiled. ``FEEDLOG_PURE=1`` in the environment makes the Python source run even where the
compiled modules are installed: to debug or profile them line by line, and so the test suite
checks that both forms agree. At build time, ``FEEDLOG_PURE=1`` skips compiling.

This module imports none of them (``feedlog/__init__.py`` installs the finder first).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# setup.py reads this tuple (by ast, without importing feedlog): keep it a literal.
COMPILED = (
    "feedlog.core.validate",
    "feedlog.core.encoding",
    "feedlog.core.wire",
    "feedlog.core.boxstream",
    "feedlog.core.bundle",
)
PURE_ENV = "FEEDLOG_PURE"


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the compiled modules from their ``.py`` source, ignoring any extension beside."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in COMPILED or not path:
            return None
        name = fullname.rpartition(".")[2]
        for d in path:
            source = os.path.join(d, name + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def pure_requested() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def install_pure_finder() -> None:
    """With FEEDLOG_PURE set, make the compiled modules import from source (idempotent)."""
    if pure_requested() and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def built(name: str) -> tuple[Path, list[Path]]:
    """A module of COMPILED: its ``.py`` source, and the extensions built from it beside it."""
    source = Path(__file__).resolve().parent.parent / (name.replace(".", "/") + ".py")
    return source, sorted(p for suffix in importlib.machinery.EXTENSION_SUFFIXES
                          for p in source.parent.glob(source.stem + suffix))


def is_compiled(module: ModuleType) -> bool:
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def status() -> dict[str, bool]:
    """Each module of COMPILED -> whether it runs compiled in this process (imports them)."""
    return {name: is_compiled(importlib.import_module(name)) for name in COMPILED}


def summary() -> str:
    """One line for benchmarks and reports: how the hot modules run here."""
    st = status()
    done = sum(st.values())
    if done == len(st):
        return f"compiled core: all {done} hot modules compiled (mypyc)"
    why = " (FEEDLOG_PURE set)" if pure_requested() else ""
    return f"compiled core: {done} of {len(st)} hot modules compiled{why}; the rest run as Python"

"""Build hook (the rest of the metadata is in pyproject.toml): compiles the hot sans-IO modules
listed in feedlog/native.py with mypyc, next to their Python source. Without mypyc or a C
compiler, or with FEEDLOG_PURE=1, nothing is compiled and the same modules run as Python."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def compiled_modules() -> list[str]:
    """feedlog.native.COMPILED, read without importing feedlog (its dependencies may be
    missing in the build environment)."""
    tree = ast.parse((HERE / "feedlog" / "native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py: feedlog/native.py has no COMPILED tuple")


def ext_modules() -> list[object]:
    if os.environ.get("FEEDLOG_PURE", "") not in ("", "0"):
        return []
    paths = [name.replace(".", "/") + ".py" for name in compiled_modules()]
    try:
        from mypyc.build import mypycify

        # The isolated build environment holds mypy but not feedlog's dependencies: check
        # loosely, so what they export is Any to mypyc (generic calls, same behaviour).
        exts = mypycify(["--config-file=", "--ignore-missing-imports", *paths],
                        opt_level="3", group_name="feedlog_native")
    except (Exception, SystemExit) as exc:  # mypyc missing or refusing: run as Python
        print(f"feedlog: the hot modules stay Python ({exc})", file=sys.stderr)
        return []
    for ext in exts:
        ext.optional = True  # a compiler error leaves the Python module in use
    return list(exts)


setup(ext_modules=ext_modules())

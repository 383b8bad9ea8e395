"""feedlog/core stays pure: it imports only the standard library's pure parts, cbor2 and nacl."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "feedlog" / "core"
FORBIDDEN = {
    "asyncio", "socket", "sqlite3", "aiosqlite", "time", "random", "os", "secrets",
    "threading", "subprocess", "selectors", "pathlib", "io", "shutil", "tempfile",
    "datetime", "typer", "rich", "zeroconf", "platformdirs", "concurrent", "multiprocessing",
}
ALLOWED_THIRD_PARTY = {"cbor2", "nacl"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_core_imports_nothing_impure() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8
    for f in files:
        mods = imports(f)
        bad = mods & FORBIDDEN
        assert not bad, f"{f.name} imports {sorted(bad)}"
        for m in mods - {"feedlog", "__future__"}:
            assert m in ALLOWED_THIRD_PARTY or m in _stdlib(), f"{f.name} imports {m}"
        if "feedlog" in mods:
            text = f.read_text(encoding="utf-8")
            for line in text.splitlines():
                if line.startswith(("from feedlog", "import feedlog")):
                    assert line.startswith(("from feedlog.core", "import feedlog.core")), (
                        f"{f.name}: {line}")


def test_only_crypto_imports_nacl_signing() -> None:
    # bench.py measures raw pynacl as the baseline its ratios are taken against.
    for f in sorted(Path(CORE.parent).rglob("*.py")):
        if f.name not in ("crypto.py", "bench.py"):
            assert "nacl.signing" not in f.read_text(encoding="utf-8"), f


def test_layering_check_catches_an_impure_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom os import path\n")
    assert imports(bad) & FORBIDDEN == {"asyncio", "os"}


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)

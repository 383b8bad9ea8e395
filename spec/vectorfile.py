"""The shared `--check` / write step of the spec/make_*_vectors.py scripts.

`make vectors` writes each file; `make vectors-check` (part of `make test`) fails when the file
on disk differs from what the code produces now.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_or_check(out: Path, text: str, argv: list[str] | None = None,
                   description: str | None = None) -> int:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true", help="exit 1 if the file on disk differs")
    args = ap.parse_args(argv)
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is out of date: run `make vectors` and commit it", file=sys.stderr)
            return 1
        print(f"{out.name}: up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0

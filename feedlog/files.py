"""Small file-system helpers shared by the shells that write files (key files, stick bundles)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or link inside ``directory`` durable. Platforms that cannot open a folder
    (Windows) are skipped: there the synced file and the rename are the best there is."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)

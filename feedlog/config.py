"""One place for resource limits (README "Limits").

Every bound that protects a node from a peer, a stick or a full disk lives in ``Limits``, a
frozen dataclass of sane defaults. A home may override any of them in an optional
``config.toml``:

    [limits]
    max_frame_size = 1048576
    handshake_timeout = 10.0

Unknown sections or keys, wrong types and out-of-range values are refused with a LocalError
whose code says which (``config-unreadable``, ``config-unknown-key``, ``config-bad-value``), so
a typo never silently falls back to a default. The replication, discovery and bundle code take
their bounds from here rather than from module constants.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedlog.core.errors import LocalError

CONFIG_FILE = "config.toml"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one node. Sizes are bytes, timeouts seconds."""

    max_frame_size: int = 256 * KiB
    """Largest replication frame accepted from a peer (spec/replication.md §5.1: a sender
    may send up to 256 KiB and never more, so this can only be raised, which helps only with
    other implementations)."""
    max_vector_entries: int = 65_536
    """Most feeds in one vector (the "what I have" note) a peer may send."""
    max_concurrent_peers: int = 64
    """Most peer connections served at once (past the handshake); further ones are refused."""
    max_pending_handshakes: int = 32
    """Most connections still in the handshake at once, counted apart from the peers served;
    when full, the oldest pending handshake is dropped for the new one (connection floods)."""
    per_peer_buffered_bytes: int = 8 * MiB
    """Most bytes received from one peer and not yet stored (back-pressure beyond that). Half
    of it holds the batch being committed, the other half what is verified meanwhile: at 4 MiB
    the verify workers ran dry during commits (~5% idle CPU in a sync, ~1.5% at 8 MiB)."""
    handshake_timeout: float = 10.0
    """A peer must finish the secret handshake within this time (slow-loris)."""
    idle_timeout: float = 90.0
    """A connection on which nothing arrives for this long is closed."""
    bundle_segment_size: int = 64 * MiB
    """Size at which an exported bundle starts a new segment file."""
    max_bundle_file_size: int = 4 * GiB - 1
    """Largest bundle file read on import (FAT32's file size limit by default)."""
    max_store_bytes: int = 0
    """Cap on the SQLite store's size (0: no cap beyond the disk); over it, writes fail with
    ``disk-full`` and nothing is changed."""
    store_cache_size: int = 32 * MiB
    """SQLite page cache of the store's connection: the largest part of a node's memory, and
    its bound (a receiver's peak RSS stays flat once it is full, however large the feed). More
    makes appends to a big store cheaper; less suits a small device."""


# (lowest, highest) accepted value of each field.
_RANGES: dict[str, tuple[float, float]] = {
    # any sender may send frames up to 256 KiB (spec/replication.md §5.1): a lower limit would
    # refuse conforming peers
    "max_frame_size": (256 * KiB, 64 * MiB),
    "max_vector_entries": (16, 10_000_000),
    "max_concurrent_peers": (1, 10_000),
    "max_pending_handshakes": (1, 10_000),
    "per_peer_buffered_bytes": (64 * KiB, 1 * GiB),
    "handshake_timeout": (0.1, 600.0),
    "idle_timeout": (1.0, 86_400.0),
    "bundle_segment_size": (1 * MiB, 4 * GiB - 1),
    "max_bundle_file_size": (1 * MiB, 1 << 50),
    "max_store_bytes": (0, 1 << 50),
    "store_cache_size": (256 * KiB, 64 * GiB),
}

_FIELDS = {f.name: f for f in dataclasses.fields(Limits)}


def _bad(message: str) -> LocalError:
    return LocalError(message, code="config-bad-value")


def _check_value(name: str, value: Any, where: str) -> int | float:
    is_float = _FIELDS[name].type in (float, "float")
    if type(value) is bool or not isinstance(value, int | float):
        raise _bad(f"{where}: {name} must be a number, not {type(value).__name__}")
    if not is_float and type(value) is not int:
        raise _bad(f"{where}: {name} must be a whole number")
    if isinstance(value, float) and value != value:  # NaN
        raise _bad(f"{where}: {name} must be a number")
    lo, hi = _RANGES[name]
    if not lo <= value <= hi:
        raise _bad(f"{where}: {name} = {value} is outside {lo:g}..{hi:g}")
    return float(value) if is_float else int(value)


def limits_from_dict(doc: dict[str, Any], *, where: str = CONFIG_FILE) -> Limits:
    """Limits from a parsed config document (``{"limits": {...}}``); defaults for the rest."""
    unknown = set(doc) - {"limits"}
    if unknown:
        raise LocalError(f"{where}: unknown section(s) {sorted(unknown)}",
                         code="config-unknown-key")
    table = doc.get("limits", {})
    if not isinstance(table, dict):
        raise _bad(f"{where}: [limits] must be a table")
    unknown = set(table) - set(_FIELDS)
    if unknown:
        raise LocalError(
            f"{where}: unknown limit(s) {sorted(unknown)}; known: {', '.join(_FIELDS)}",
            code="config-unknown-key")
    values: dict[str, Any] = {name: _check_value(name, v, where) for name, v in table.items()}
    limits = Limits(**values)
    if limits.bundle_segment_size > limits.max_bundle_file_size:
        raise _bad(f"{where}: bundle_segment_size exceeds max_bundle_file_size")
    return limits


def load_limits(home: Path) -> Limits:
    """The limits of the node at ``home``: defaults, overridden by ``home/config.toml``."""
    path = Path(home) / CONFIG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Limits()
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", code="config-unreadable") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise LocalError(f"{path} is not valid TOML: {exc}", code="config-unreadable") from None
    return limits_from_dict(doc, where=str(path))


def limits_as_dict(limits: Limits) -> dict[str, int | float]:
    return {name: getattr(limits, name) for name in _FIELDS}

"""Identity on disk and the node's home folder (spec/feed.md §11).

The secret key file holds the 32-byte Ed25519 seed as JSON. It is created with mode 0600 and,
as ssh does with private keys, feedlog refuses to use one that the group or others can read.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import platformdirs

from feedlog.core.crypto import Keypair
from feedlog.core.errors import LocalError
from feedlog.core.ids import feed_id_text

KEY_FILE = "secret.json"
DB_FILE = "feedlog.sqlite3"
KEY_FORMAT = "feedlog-ed25519-v1"


def default_home() -> Path:
    """``FEEDLOG_HOME`` or the platform's per-user data directory."""
    env = os.environ.get("FEEDLOG_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("feedlog", appauthor=False))


def write_key(path: Path, keys: Keypair, *, overwrite: bool = False) -> None:
    """Write ``keys`` to ``path`` with mode 0600, never through a world-readable moment."""
    data = json.dumps(
        {"format": KEY_FORMAT, "id": feed_id_text(keys.public), "seed": keys.seed.hex()},
        indent=1,
    ) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise LocalError(f"{path} already exists; refusing to overwrite a key",
                         code="key-exists") from None
    except OSError as exc:
        raise LocalError(f"cannot write {path}: {exc.strerror}", code="home-unwritable") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key(path: Path) -> Keypair:
    """Read a key file, refusing one that others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise LocalError(f"no identity at {path}: run `feedlog init` first",
                         code="no-identity") from None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LocalError(
            f"permissions {stat.S_IMODE(st.st_mode):04o} for {path} are too open: a secret key "
            f"must be readable by you alone (run: chmod 600 {path})",
            code="key-permissions",
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != KEY_FORMAT:
            raise ValueError("unknown format")
        keys = Keypair.from_seed(bytes.fromhex(doc["seed"]))
    except (ValueError, KeyError, TypeError, AttributeError, LocalError):
        raise LocalError(f"{path} is not a feedlog key file", code="bad-key-file") from None
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", code="bad-key-file") from None
    if doc.get("id") not in (None, feed_id_text(keys.public)):
        raise LocalError(f"{path}: the id does not match the seed", code="bad-key-file")
    return keys

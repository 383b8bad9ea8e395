"""Identity on disk and the node's home folder (spec/feed.md §11).

The secret key file holds the 32-byte Ed25519 seed as JSON. It is created with mode 0600 and,
as ssh does with private keys, feedlog refuses to use one that the group or others can read.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import platformdirs

from feedlog.core.crypto import Keypair
from feedlog.core.errors import LocalError, StoreError
from feedlog.core.ids import feed_id_text
from feedlog.files import fsync_dir

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
    """Write ``keys`` to ``path`` with mode 0600, never through a world-readable moment.

    The key is written to a temporary file, synced, and then linked into place, so a crash or a
    full disk at any moment leaves either no key file or a complete one, never a torn one.
    """
    data = json.dumps(
        {"format": KEY_FORMAT, "id": feed_id_text(keys.public), "seed": keys.seed.hex()},
        indent=1,
    ) + "\n"
    if path.exists() and not overwrite:
        raise LocalError(f"{path} already exists; refusing to overwrite a key", code="key-exists")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # left over by a crashed earlier attempt
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and, unlike rename, refuses an existing file
            finally:
                tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
    except FileExistsError:
        raise LocalError(f"{path} already exists; refusing to overwrite a key",
                         code="key-exists") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"disk full while writing {path}; no key was written",
                             code="disk-full") from None
        raise LocalError(f"cannot write {path}: {exc.strerror}", code="home-unwritable") from None


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
        data = path.read_bytes()
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", code="bad-key-file") from None
    return decode_key_file(data, where=str(path))


def decode_key_file(data: bytes, *, where: str = KEY_FILE) -> Keypair:
    """The key pair in the bytes of a key file; LocalError ``bad-key-file`` for anything else."""
    try:
        doc = json.loads(data.decode("utf-8"))
        if type(doc) is not dict or doc.get("format") != KEY_FORMAT:
            raise ValueError("unknown format")
        seed = doc["seed"]
        if type(seed) is not str or len(seed) != 64:
            raise ValueError("the seed is not 64 hex digits")
        keys = Keypair.from_seed(bytes.fromhex(seed))
    except (ValueError, KeyError, TypeError, RecursionError, LocalError):
        raise LocalError(f"{where} is not a feedlog key file", code="bad-key-file") from None
    if doc.get("id") != feed_id_text(keys.public):
        # The id is required: it is what makes a damaged seed detectable instead of silently
        # turning into another identity.
        raise LocalError(f"{where}: the id does not match the seed", code="bad-key-file")
    return keys

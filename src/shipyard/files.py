"""Files written whole or not at all; private ones (secrets, keys) readable by their owner only."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
PUBLIC_FILE = 0o644


def write_private(path: Path, data: bytes, *, overwrite: bool = True) -> bool:
    """Write ``data`` to ``path`` with mode 0600, atomically; whether it was written.

    The bytes go to a temporary file in the same folder, created with mode 0600 and synced
    to disk, which then takes ``path``'s name in one step: no reader ever sees the file
    half-written or readable by others. A missing folder is created with mode 0700. With
    ``overwrite=False`` an existing ``path`` is kept and ``False`` returned, so of several
    processes creating the same file at once exactly one wins and all read the same bytes.
    """
    return write_whole(path, data, overwrite=overwrite, mode=PRIVATE_FILE)


def write_whole(
    path: Path, data: bytes, *, overwrite: bool = True, mode: int = PUBLIC_FILE
) -> bool:
    """``write_private`` for a file others may read (``mode``, e.g. a public key)."""
    folder = path.parent
    folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # mkstemp's 0600 (narrowed by a strict umask)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            temporary.replace(path)
        else:
            try:
                os.link(temporary, path)  # unlike a rename, refuses to replace
            except FileExistsError:
                return False
        _sync_folder(folder)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    # The new name is durable only once the folder's entry is on disk too. Some file systems
    # cannot sync a folder; the file itself is already synced, so that is not fatal.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

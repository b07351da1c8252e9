"""Writing files so that a crash never leaves a half-written one."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], Any], mode: int | None = None) -> None:
    """
    Write ``path`` atomically: ``write_fn`` fills a temporary file in the same folder, which then
    replaces ``path`` in one rename. A crash at any moment leaves the old file (or none) intact.

    :param path: the file to write
    :param write_fn: called with the open binary temporary file
    :param mode: permission bits of the final file (``None``: what ``open()`` would give, ``0o666 & ~umask``)
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write_fn(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

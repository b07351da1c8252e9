"""
Atomic file writes that leave nothing behind.

:func:`atomic_write` writes a file so that, whatever happens (an exception, ``SIGKILL``, a power
cut after the call returned), the target is either its old complete content or its new complete
content, never a mix, and a killed writer's leftovers are cleaned up by the next write.

**Temp file naming.** The new content is written to a sibling of the target in the same folder
(so that ``os.replace`` is an atomic rename on the same file system)::

    .<target name>.<host>-<pid>.<random>.tmp<target suffix>

e.g. ``.model.zip.node1-4242.k3j9x2ab.tmp.zip``: hidden, tied to its target, ending with the
target's suffix. The ``mkstemp`` names written so far by ``FederatedPG.save``
(``.<target name>.<random>.tmp.zip``) and by the first version of this module
(``.<target name>.<random>.tmp``) are recognised too (by age only: they do not say their writer).

**Stale temp files.** Before writing, temp files *of the same target* are removed when

- their writer is known dead: the host in the name is this host and no process has that pid, or
- they were last modified more than ``stale_after`` seconds ago (default 600 s; a live writer keeps
  touching its temp file, so only a writer stalled for that long could lose its file — it then gets
  an error at its rename, never a corrupt target).

Temp files of other targets, and files that do not follow the pattern, are never touched.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

#: Temp files untouched for longer than this (seconds) are taken as left by a killed writer.
STALE_AFTER = 600.0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


#: The longest file name most file systems allow (bytes).
NAME_MAX = 255
#: Room a temp name needs beside the target's name: ``.`` + ``.<host ≤ 32>-<pid ≤ 10>.<8 hex>.tmp`` (and the suffix).
_TEMP_OVERHEAD = 1 + 1 + 32 + 1 + 10 + 1 + 8 + 4


def _temp_stem(name: str) -> str:
    """
    :param name: the target's file name
    :return: the name as it appears in its temp files: itself, or — when a temp name would pass :data:`NAME_MAX`
        (a legal 244-byte target name) — its start and ``~`` and a hash of the whole name
    """
    suffix = pathlib.Path(name).suffix
    budget = NAME_MAX - _TEMP_OVERHEAD - len(suffix.encode())
    encoded = name.encode()
    if len(encoded) <= budget:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    return encoded[: budget - 9].decode(errors="ignore") + "~" + digest


def temp_name(target: str | os.PathLike) -> str:
    """
    :param target: the file being written
    :return: a fresh temp file name (no folder) for it, following the pattern in the module docstring
    """
    name = pathlib.Path(target).name
    suffix = pathlib.Path(name).suffix
    return f".{_temp_stem(name)}.{_host()}-{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}"


def _temp_pattern(target: pathlib.Path) -> re.Pattern[str]:
    name = _temp_stem(target.name)
    suffix = pathlib.Path(target.name).suffix
    # new names: <host>-<pid>.<random>; mkstemp names: <random> (8 of [a-z0-9_]), with or without the suffix
    writer = r"(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)\.[0-9a-f]+|(?P<legacy>[A-Za-z0-9_]+))"
    return re.compile(rf"^\.{re.escape(name)}\.{writer}\.tmp(?:{re.escape(suffix)})?$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:
        return False
    return True


def stale_temp_files(target: str | os.PathLike, stale_after: float = STALE_AFTER) -> list[pathlib.Path]:
    """
    The leftover temp files of ``target`` that :func:`atomic_write` removes (see the module docstring).

    :param target: the file
    :param stale_after: age in seconds beyond which a temp file counts as abandoned
    :return: their paths
    """
    target = pathlib.Path(target)
    pattern = _temp_pattern(target)
    folder = target.parent
    found = []
    now = time.time()
    host = _host()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        pid = match["pid"]
        if pid is not None and match["host"] == host and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            found.append(folder / entry.name)
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:  # removed meanwhile
            continue
        if age > stale_after:
            found.append(folder / entry.name)
    return found


def remove_stale_temp_files(target: str | os.PathLike, stale_after: float = STALE_AFTER) -> list[pathlib.Path]:
    """
    Remove what :func:`stale_temp_files` finds.

    :param target: the file
    :param stale_after: age in seconds beyond which a temp file counts as abandoned
    :return: the paths removed
    """
    removed = []
    for path in stale_temp_files(target, stale_after):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:  # another writer cleaned it first
            pass
    return removed


def _fsync_dir(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike,
    write_fn: Callable[[io.BufferedWriter], Any],
    mode: int | None = None,
    stale_after: float = STALE_AFTER,
) -> pathlib.Path:
    """
    Write ``path`` atomically: ``write_fn`` fills a temporary file in the same folder, which is flushed
    to disk (``fsync``) and then replaces ``path`` in one rename (``os.replace``); the folder is synced.
    A crash at any moment leaves the old file (or none) intact.

    If ``write_fn`` raises, the temp file is removed and ``path`` is left as it was. The new file gets
    the permissions a plain ``open(path, "w")`` would give it: an existing file keeps its mode, a new
    one gets ``0o666 & ~umask`` (the kernel applies the umask; ``mkstemp`` would give ``0o600``);
    ``mode`` sets them explicitly. Stale temp files of the same target left by killed writers are
    removed first (see the module docstring).

    :param path: the file to write (its folder must exist)
    :param write_fn: called with the open binary temporary file (``np.save(f, ...)``, ``model.save(f)``, ``f.write(...)``)
    :param mode: permission bits of the final file (``None``: what ``open()`` would give)
    :param stale_after: age in seconds beyond which another writer's temp file of ``path`` counts as abandoned
    :return: ``path``
    """
    # Through a symbolic link: the file it points to gets the new content and the link stays a link.
    target = pathlib.Path(os.path.realpath(path)) if os.path.islink(path) else pathlib.Path(path)
    folder = target.parent
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(f"cannot write {target}: {folder} is not a folder.")
        raise FileNotFoundError(f"cannot write {target}: the folder {folder} does not exist.")
    remove_stale_temp_files(target, stale_after)
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)  # open() keeps an existing file's mode
        except FileNotFoundError:
            mode = None  # created below with 0o666: the kernel applies the umask, as for open()
    tmp = folder / temp_name(target)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # a fresh name, open()'s permissions
    try:
        with open(tmp, "wb") as file:  # by name, so that file.name is the temp file's path
            write_fn(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)
    return target


def make_folder(folder: str | os.PathLike) -> pathlib.Path:
    """
    ``mkdir -p`` with a clear error when a part of the path is a file.

    :param folder: the folder to create (with its parents) if missing
    :return: the folder
    :raises NotADirectoryError: naming the file that stands where a folder is needed
    """
    folder = pathlib.Path(folder)
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise NotADirectoryError(
                    f"cannot create the folder {folder}: {part} is a file, not a folder. Choose another path, or "
                    "move that file."
                )
            break
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", mode: int | None = None) -> pathlib.Path:
    """
    :func:`atomic_write` of a text.

    :param path: the file
    :param text: its new content
    :param encoding: text encoding
    :param mode: permission bits (``None``: as ``open`` would)
    :return: ``path``
    """
    data = text.encode(encoding)
    return atomic_write(path, lambda file: file.write(data), mode)


def read_zip_json(path: str | os.PathLike, member: str = "data") -> dict[str, Any] | None:
    """
    The JSON attributes of an SB3 model zip (its ``data`` member), read without unpickling anything (the values SB3
    had to pickle stay base64 text).

    :param path: a model or checkpoint file
    :param member: the zip member holding the JSON
    :return: the attributes, or ``None`` if the file is not such a zip (loading it then gives the error)
    """
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read(member))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RecursionError):
        return None
    return data if isinstance(data, dict) else None

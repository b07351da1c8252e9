"""
The run cache: one JSON file per run, written atomically when the run completes.

``<folder>/<label>_<key>.json`` holds the run's configuration, its result, the seconds it took and the library that
produced it (``sb3_fedpg.__version__`` and the git commit of the checkout, ``+dirty`` with uncommitted changes). A file
is either absent or complete (:func:`sb3_fedpg.common.files.atomic_write_text`), so a sweep killed at any moment
restarts where it stopped. ``<folder>/_sweep.json`` is the sweep's record (:class:`harness.spec.Sweep`).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import subprocess
from typing import Any

from harness.keys import jsonable
from harness.spec import Run, Sweep
from sb3_fedpg import __version__
from sb3_fedpg.common.files import atomic_write_text

SWEEP_FILE = "_sweep.json"


@functools.cache
def library_version() -> str:
    """:return: ``sb3_fedpg.__version__``, and the checkout's git commit when there is one (``0.1.0+648501e``)"""
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+{commit}{'.dirty' if dirty else ''}" if commit else __version__


def machine() -> dict[str, Any]:
    """:return: where this process runs: ``platform``, ``machine`` (``x86_64``), ``python`` (version), ``cpus``"""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def entry_text(entry: dict[str, Any]) -> str:
    """
    :param entry: a run's record, its ``result`` last
    :return: its file's text: one field a line, the result on one line (a curve is one line, not one per number)
    """
    head = {key: value for key, value in entry.items() if key != "result"}
    fields = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in head.items()]
    return "{\n" + ",\n".join([*fields, f' "result": {json.dumps(entry["result"])}']) + "\n}\n"


class Cache:
    """
    A study's cached runs.

    :param folder: the study's cache folder (created when the first run is stored)
    """

    def __init__(self, folder: str | pathlib.Path) -> None:
        self.folder = pathlib.Path(folder)

    def path(self, run: Run) -> pathlib.Path:
        """
        :param run: a run
        :return: its file (which may not exist yet)
        """
        return self.folder / run.file_name

    def has(self, run: Run) -> bool:
        """
        :param run: a run
        :return: whether its result is cached
        """
        return self.path(run).is_file()

    def entry(self, run: Run) -> dict[str, Any]:
        """
        :param run: a cached run
        :return: its whole record (``key``, ``label``, ``fn``, ``config``, ``library_version``, ``seconds``, ``result``)
        :raises ValueError: the file holds another configuration than the run's (a hash collision or a hand edit)
        """
        entry = json.loads(self.path(run).read_text())
        if entry["key"] != run.key or entry["config"] != jsonable(dict(run.config)):
            raise ValueError(f"{self.path(run)} does not hold the configuration of {run.label}")
        return entry

    def load(self, run: Run) -> Any:
        """
        :param run: a cached run
        :return: its result
        """
        return self.entry(run)["result"]

    def store(self, run: Run, result: Any, seconds: float | None, **extra: Any) -> pathlib.Path:
        """
        Write a run's file atomically.

        :param run: the run
        :param result: what ``run.fn(**run.config)`` returned
        :param seconds: how long it took (``None``: not measured)
        :param extra: further fields of the record (``note``, ``library_version`` of a run taken from committed results)
        :return: the file
        """
        entry = {
            "key": run.key,
            "label": run.label,
            "fn": run.fn.__qualname__,
            "config": dict(run.config),
            "library_version": library_version(),
            "seconds": seconds,
            **extra,
            "result": result,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.path(run), entry_text(jsonable(entry)))

    def sweep(self) -> Sweep | None:
        """:return: the sweep's record, if a sweep has computed runs into this folder"""
        path = self.folder / SWEEP_FILE
        if not path.is_file():
            return None
        return Sweep(**json.loads(path.read_text()))

    def record_sweep(self, out_dir: str, seconds: float) -> Sweep:
        """
        Add an invocation's compute time to the sweep's record (created with ``out_dir`` and this machine by the first
        one).

        :param out_dir: the results folder of this invocation
        :param seconds: the wall-clock seconds it spent computing runs
        :return: the updated record
        """
        old = self.sweep()
        if old is None:
            return self.write_sweep(Sweep(out_dir, seconds, machine()))
        return self.write_sweep(Sweep(old.out_dir, old.seconds + seconds, old.machine))

    def write_sweep(self, sweep: Sweep) -> Sweep:
        """
        :param sweep: the sweep's record
        :return: it, written (atomically; an empty ``machine`` left out)
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {key: value for key, value in vars(sweep).items() if key != "machine" or value}
        atomic_write_text(self.folder / SWEEP_FILE, json.dumps(record, indent=1) + "\n")
        return sweep

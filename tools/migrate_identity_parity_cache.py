"""
Move ``benchmarks/cache/identity_parity/`` onto the benchmark harness's layout (issue 25: the study moved onto
``benchmarks/harness``), without recomputing anything.

The script before the harness cached each run as ``<algo>_<task>_s<seed>_<digest>.json``: its configuration
(``config``: algorithm, task, ``dim``, budget, keyword arguments, evaluation episodes) beside its measurements
(``reward``, ``episode_std``, ``env_steps``, ``train_cpu_seconds``, ``cpu_seconds``, ``machine``), the digest the first
10 hex digits of the SHA-256 of ``json.dumps(config, sort_keys=True)``. The harness runs take the same configuration
as their arguments, so for every run of the study's plan this computes that old name from the run's configuration,
checks that the old file holds that configuration, and stores every measurement of it as the result of the harness
entry ``<label>_<key>.json``, with the library version of the commit that added the old file and a ``note`` naming it
(``seconds``, the harness's wall-clock time, is ``null``: the old script measured CPU seconds only, kept in the
result). The old file is then deleted.

Run from the repository root, once: ``python tools/migrate_identity_parity_cache.py``. Running it again finds nothing
to move and checks that every run of the plan has its harness entry.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import identity_parity as study  # noqa: E402
from harness import Settings  # noqa: E402
from harness.cache import Cache  # noqa: E402

from sb3_fedpg import __version__  # noqa: E402

FOLDER = ROOT / "benchmarks" / "cache" / "identity_parity"


def old_name(config: dict) -> str:
    """:return: the file name the script before the harness gave the run (its configuration's digest included)"""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config['algo']}_{config['task']}_s{config['kwargs']['seed']}_{digest}.json"


def added_in(path: pathlib.Path) -> str:
    """:return: the library version of the commit that last changed a committed file"""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", str(path.relative_to(ROOT))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{__version__}+{commit}"


def main() -> None:
    from sb3_fedpg.common.cli import ArgumentParser

    ArgumentParser(description=__doc__).parse_args()  # --help, --version; no options
    cache, moved, missing = Cache(FOLDER), 0, []
    for run in study.runs(Settings(study.STUDY.settings)):
        name = old_name(dict(run.config))
        old = FOLDER / name
        if old.is_file():
            entry = json.loads(old.read_text())
            if entry.pop("config") != run.config:
                sys.exit(f"{old} holds another configuration than {run.label}")
            note = f"from benchmarks/cache/identity_parity/{name} (the script before the harness; not recomputed)"
            cache.store(run, entry, None, library_version=added_in(old), note=note)
            old.unlink()
            moved += 1
        elif not cache.has(run):
            missing.append(run.label)
    left = [path.name for path in FOLDER.glob("*.json") if len(path.stem.rsplit("_", 1)[-1]) == 10]
    print(f"identity_parity: {moved} runs moved to the harness layout; {len(left)} old files left")
    if missing or left:
        sys.exit(f"no cached result for {len(missing)} runs ({', '.join(missing[:5])}); old files no run names: {left[:5]}")


if __name__ == "__main__":
    main()

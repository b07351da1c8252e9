"""
Move ``benchmarks/cache/noise_correction/`` onto the benchmark harness's layout (issue 25: the study moved onto
``benchmarks/harness``), without recomputing anything.

The script before the harness cached each run as ``<family>_H<H>_<method>_s<seed>_<digest>.json``: the run's result
alone, the digest a SHA-256 of its configuration (family, ``h``, ``H``, the resolved method, seed, hyperparameters,
evaluation, ``"version": 2``). For every run of the study's present plan this computes that old name from the run's
harness configuration (the same values), and stores the old file's result as the harness entry
``<label>_<key>.json`` with the seconds the run measured, the library version of the commit that added the old file and
a ``note`` naming it; the old file is then deleted. Old files that no run of the plan names (superseded
configurations: LQR with a constant step or shorter budgets, ``auto_filtered`` at ``H = 50`` before ``"auto"`` became
``(H/10)²``) are moved to ``benchmarks/cache/noise_correction/superseded/``, as they were (they hold no configuration,
so no harness key can be given to them).

Run from the repository root, once: ``python tools/migrate_noise_correction_cache.py``. Running it again finds nothing
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

import noise_correction as study  # noqa: E402
from harness import Settings  # noqa: E402
from harness.cache import Cache  # noqa: E402

from sb3_fedpg import __version__  # noqa: E402

FOLDER = ROOT / "benchmarks" / "cache" / "noise_correction"


def old_name(label: str, config: dict) -> str:
    """:return: the file name the script before the harness gave the run (its configuration's digest included)"""
    old = {"family": config["family"], "h": config["heterogeneity"], "H": config["local_steps"], "method": config["method"]}
    old |= {"seed": config["seed"], "common": config["common"], "eval": config["evaluation"], "version": 2}
    return f"{label}_{hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:10]}.json"


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
    plan = study.runs(Settings(study.STUDY.settings))
    names = {run: old_name(run.label, dict(run.config)) for run in plan}
    for run, name in names.items():
        old = FOLDER / name
        if old.is_file():
            result = json.loads(old.read_text())
            note = f"from benchmarks/cache/noise_correction/{name} (the script before the harness; not recomputed)"
            cache.store(run, result, result["seconds"], library_version=added_in(old), note=note)
            old.unlink()
            moved += 1
        elif not cache.has(run):
            missing.append(run.label)
    superseded = [path for path in FOLDER.glob("*_s[0-9]_*.json") if len(path.stem.rsplit("_", 1)[-1]) == 10]
    for path in superseded:
        (FOLDER / "superseded").mkdir(exist_ok=True)
        path.rename(FOLDER / "superseded" / path.name)
    print(f"noise_correction: {moved} runs moved to the harness layout, {len(superseded)} superseded files set aside")
    if missing:
        sys.exit(f"no cached result, old or new, for {len(missing)} runs: {', '.join(missing[:5])}, ...")


if __name__ == "__main__":
    main()

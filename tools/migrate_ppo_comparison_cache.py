"""
Move ``ppo_comparison``'s committed cache, and the caches of the studies built on its runs, onto the benchmark
harness's layout (issue 25: the study moved onto ``benchmarks/harness``), without recomputing anything.

The script before the harness cached each run as ``<family>_<method>_s<seed>_<digest>.json`` (the run's result alone;
the digest a SHA-256 of its resolved configuration: algorithm, hyperparameters with the constructor's defaults,
local-only or not, the family without its algorithms' overrides, ``"version": 1``), each seed's random / zero-action
references as ``references/<family>_s<seed>_<digest>.json``, and its pilot runs and cost plan under ``pilot/`` and
``plan.json``. Three studies used the same keys: ``svrpgm_tuning`` (``ppo_comparison/tuning/``, failed runs under
``failed/``), ``ppo_epochs`` (``benchmarks/cache/ppo_epochs/``) and ``ppo_heterogeneity_probe`` (its ``h = 1`` runs
are the comparison's). For every run of each study's present plan this computes the old name from the run's harness
configuration (the same values), stores the old file's result as the harness entry ``<label>_<key>.json`` with the
seconds the run measured (none for the references; a failed tuning run: ``{"failed": message}``), the library
version of the commit that last wrote the old file and a ``note`` naming it, and deletes the old file.
``ppo_comparison``'s sweep record (``_sweep.json``) takes the machine from the committed results
(``ppo_comparison.{json,md}``) and, as its compute time, the runs' wall-clock summed (the old sweep ran them one
after the other; its own time was not kept).

Files that no run of a present plan names (runs of superseded configurations, e.g. the HalfCheetah runs with rl-zoo's
optimisation that the docs mention, the pilot runs and the plan, ``ppo_epochs``' unused references, the probe's stale
``h = 0`` runs) are moved, as they are, to a ``superseded/`` folder beside them: they hold no configuration, so no
harness key can be given to them.

Run from the repository root, once: ``python tools/migrate_ppo_comparison_cache.py``. Running it again finds nothing
to move and checks that every run of the plans has its harness entry.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import neural_runs as nr  # noqa: E402
import ppo_comparison as pc  # noqa: E402
import ppo_epochs as pe  # noqa: E402
import ppo_heterogeneity_probe as probe  # noqa: E402
import svrpgm_tuning as st  # noqa: E402
from harness import Run, Settings  # noqa: E402
from harness.cache import Cache  # noqa: E402
from harness.spec import Sweep  # noqa: E402

from sb3_fedpg import __version__  # noqa: E402

CACHES = ROOT / "benchmarks" / "cache"
OLD = CACHES / "ppo_comparison"


def digest(config: dict[str, Any]) -> str:
    """:return: the old scripts' digest of a configuration"""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def old_run_name(run: Run) -> str:
    """:return: the file name the script before the harness gave a run (``ppo_comparison.run_key``)"""
    config = run.config
    algo, _, local = config["spec"]
    family = {k: v for k, v in config["family"].items() if k not in nr.ALGOS}
    old = {"algo": algo, "hyperparams": config["hyperparams"], "local": local, "family": family, "version": 1}
    return f"{config['family_name']}_{config['method']}_s{config['seed']}_{digest(old)}.json"


def old_reference_name(run: Run) -> str:
    """:return: the file name the script before the harness gave a seed's references (``cached_references``)"""
    family = run.config["family"]
    name = next(n for n, f in pc.FAMILIES.items() if f["env_id"] == family["env_id"] and f["budget"] == family["budget"])
    return f"{name}_s{run.config['seed']}_{digest({**run.config, 'version': 1})}.json"


def added_in(path: pathlib.Path) -> str:
    """:return: the library version of the commit that last wrote a committed file"""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", str(path.relative_to(ROOT))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{__version__}+{commit}"


def move(cache: Cache, run: Run, old: pathlib.Path, result: Any, seconds: float | None) -> None:
    """Store an old file's result as the run's harness entry, then delete the old file."""
    note = f"from benchmarks/cache/{old.relative_to(CACHES)} (the script before the harness; not recomputed)"
    cache.store(run, result, seconds, library_version=added_in(old), note=note)
    old.unlink()


def set_aside(paths: list[pathlib.Path], folder: pathlib.Path) -> int:
    """Move files (as they are) into ``folder/superseded/``, keeping their place below ``folder``."""
    for path in paths:
        target = folder / "superseded" / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    return len(paths)


def migrate(cache: Cache, plan: dict[Run, pathlib.Path], missing: list[str]) -> int:
    """Move every old file of a plan; name the runs that have neither an old file nor a harness entry."""
    moved = 0
    for run, old in plan.items():
        if old.is_file():
            result = json.loads(old.read_text())
            failed = old.parent.name == "failed"
            move(cache, run, old, {"failed": result["error"]} if failed else result, None if failed else result.get("seconds"))
            moved += 1
        elif not cache.has(run):
            missing.append(run.label)
    return moved


def sweep_record(seconds: float) -> Sweep:
    """:return: the comparison's sweep record: the machine of the committed results, the runs' wall-clock summed"""
    data = json.loads((pc.RESULTS / "ppo_comparison.json").read_text())
    found = re.search(r"one torch thread, (\S+) with (\d+) cores", (pc.RESULTS / "ppo_comparison.md").read_text())
    assert found is not None and int(found[2]) == data["machine"]["cpus"]
    return Sweep(str(pc.RESULTS.relative_to(ROOT)), seconds, {**data["machine"], "machine": found[1]})


def main() -> None:
    from sb3_fedpg.common.cli import ArgumentParser

    ArgumentParser(description=__doc__).parse_args()  # --help, --version; no options
    missing: list[str] = []
    comparison = Cache(OLD)
    runs = pc.runs(Settings(pc.STUDY.settings))
    plan = {r: OLD / (old_run_name(r) if r.fn is pc.train else f"references/{old_reference_name(r)}") for r in runs}
    moved = {"ppo_comparison": migrate(comparison, plan, missing)}
    if moved["ppo_comparison"]:
        seconds = sum(comparison.load(r)["seconds"] for r in runs if r.fn is pc.train)
        comparison.write_sweep(sweep_record(seconds))
    tuning = {st.tuning_run(n, lr): OLD / "tuning" / pc_name for n in pc.FAMILIES for lr, pc_name in tuning_names(n)}
    moved["svrpgm_tuning"] = migrate(st.CACHE, {r: p for r, p in tuning.items() if p.is_file() or st.CACHE.has(r)}, missing)
    epochs = Cache(CACHES / "ppo_epochs")
    moved["ppo_epochs"] = migrate(epochs, {r: epochs.folder / old_run_name(r) for r in pe.runs()}, missing)
    aside = set_aside([p for p in OLD.glob("*_s[0-9]_*.json") if len(p.stem.rsplit("_", 1)[-1]) == 10], OLD)
    aside += set_aside([*OLD.glob("pilot/*.json"), *OLD.glob("plan.json")], OLD)
    aside += set_aside([*epochs.folder.glob("references/*.json")], epochs.folder)
    stale = [p for p in probe.CACHE.glob("*_h0_s[0-9]_*.json") if len(p.stem.rsplit("_", 1)[-1]) == 10]
    aside += set_aside(stale, probe.CACHE)
    for folder in (OLD / "tuning" / "failed", OLD / "tuning", OLD / "pilot", OLD / "references", epochs.folder / "references"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    print(f"moved to the harness layout: {moved}; {aside} superseded files set aside")
    if missing:
        sys.exit(f"no cached result, old or new, for {len(missing)} runs: {', '.join(missing[:5])}, ...")


def tuning_names(name: str) -> list[tuple[float, str]]:
    """:return: each step size of the ladder with its old file (``tuning/<name>`` or ``tuning/failed/<name>``)"""
    out = []
    for lr in st.LADDER:
        file_name = old_run_name(pc.run(name, st.family_at(name, lr), "fedsvrpgm", st.TUNING_SEED))
        out.append((lr, f"failed/{file_name}" if (OLD / "tuning" / "failed" / file_name).is_file() else file_name))
    return out


if __name__ == "__main__":
    main()

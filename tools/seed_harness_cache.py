"""
Seed the benchmark harness's cache with what only the committed results hold (issue 25: the studies moved onto
``benchmarks/harness``).

Most runs of the ported studies were recomputed into ``benchmarks/cache/<study>/`` and give the committed numbers bit
for bit. Three kinds of values cannot be recomputed, so this script takes them from the committed
``benchmarks/results/<study>.json``, each cache entry saying where it came from (``note``) and which commit wrote the
file (``library_version``):

- measurements: ``tabular_bias``'s 1,000-round timing (a wall time), ``byzantine``'s sweep time;
- runs that the present library computes a few ulps apart (``aggregator_breakdown``: the mean's summation order
  and Weiszfeld's tolerance changed since its results were committed; the old script itself no longer reproduces
  them), and runs too long to redo here (``byzantine``: 30 trainings of 1M steps; ``collaboration``: 51 trainings;
  ``comparison``: 90 runs, about an hour; both scripts cached their runs under the ignored ``runs/``, never committed,
  but their JSON keeps every run's result whole);
- the sweep's record (``_sweep.json``) of the studies whose runs all came back: the results folder their JSON names
  (``settings.out_dir``), ``byzantine``'s sweep time, and the machine the runs were computed on where the JSON says
  (``collaboration``, ``comparison``, ``noise_correction``, ``zoo_optimize``).

``zoo_optimize``'s committed cache, in the old script's layout (``<algo>_<entry hash>_s<seed>_e<episodes>.json`` and
``<algo>_study_<hash>.json``, the hashes its own), is moved into the harness's: each file becomes the entry of its run
(``note`` names the old file, ``library_version`` the commit that added it), found by recomputing the old hash from the
run's configuration, and the old file is deleted.

(``noise_correction``'s runs came from its committed cache: ``tools/migrate_noise_correction_cache.py``.
``lqr_bias``, ``lqr_speedup`` and ``tabular_transition`` are not seeded: the present library computes their runs a
few ulps apart from the committed ones, which hold too little to rebuild every run; their results were regenerated
from their recomputed cache. Nor is ``heterogeneity``: its old JSON kept seed means and per-seed summaries, not every
run's result, and its old cache was never committed; it was recomputed from scratch into its cache.)

Run from the repository root: ``python tools/seed_harness_cache.py``. A computed entry of a seeded run is replaced
(the timing measured again on another, loaded machine); an entry it seeded before is checked against the committed
value (a mismatch stops it), so running it again changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import Results, Run, Settings, Sweep  # noqa: E402
from harness.cache import Cache  # noqa: E402

from sb3_fedpg import __version__  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def written_by(path: pathlib.Path) -> str:
    """:return: the library version (``__version__`` and the last commit) of a committed file"""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", str(path.relative_to(ROOT))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{__version__}+{commit}"


def committed(name: str) -> tuple[dict[str, Any], str]:
    """:return: the committed results of a study and the library version (commit) that wrote them"""
    return json.loads((RESULTS / f"{name}.json").read_text()), written_by(RESULTS / f"{name}.json")


def tabular_bias(data: dict[str, Any]) -> Iterator[tuple[Run, Any]]:
    import tabular_bias as study

    yield Run(study.seconds, {"rounds": data["timing"]["rounds"]}, "timing"), data["timing"]["seconds"]


def aggregator_breakdown(data: dict[str, Any]) -> Iterator[tuple[Run, Any]]:
    import aggregator_breakdown as study

    s = Settings(study.STUDY.settings)
    assert (s.n_agents, s.dim, s.attacks, s.seeds) == (data["n_agents"], data["dim"], data["attacks"], data["seeds"])
    for name, entry in data["aggregators"].items():
        for magnitude in s.magnitudes:
            for f, error in enumerate(entry["errors"][f"{magnitude:.0e}"]):
                yield study.run(s, name, f, magnitude), error


def byzantine(data: dict[str, Any]) -> Iterator[tuple[Run, Any]]:
    import byzantine as study

    s = Settings(study.STUDY.settings)
    assert all(s[k] == data[k] for k in ("env", "n_agents", "adversaries", "timesteps"))
    assert list(range(s.seeds)) == data["seeds"] and not data["quick"]
    for aggregator, kinds in data["results"].items():
        for kind, values in kinds.items():
            for seed, value in enumerate(values):
                yield study.run(s, aggregator, kind == "attacked", seed), value


def collaboration(data: dict[str, Any]) -> Iterator[tuple[Run, Any]]:
    import collaboration as study

    s = Settings(study.STUDY.settings)
    assert {key: s[key] for key in study.STUDY.settings} == data["config"] and not data["quick"]
    runs = study.runs(s)
    assert len(runs) == len(data["runs"])
    keys = ("n_agents", "heterogeneity", "local_steps", "correction", "seed")
    for run, result in zip(runs, data["runs"], strict=True):  # the same order: each run's configuration checked
        assert [run.config[key] for key in keys] == [result[key] for key in keys], run.label
        yield run, result


def comparison(data: dict[str, Any]) -> Iterator[tuple[Run, Any]]:
    # every run: its script cached them under runs/comparison/ (never committed); the JSON holds each run's record
    import comparison as study

    s = Settings(study.STUDY.settings)
    assert data["families"] == {name: study.FAMILIES[name] for name in s.families} and not data["quick"]
    assert (data["heterogeneity"], data["seeds"], len(data["runs"])) == (s.heterogeneity, s.seeds, len(study.runs(s)))
    for record in data["runs"]:
        run = study.run(s, record["family"], record["heterogeneity"], record["method"], record["seed"])
        assert record["hyperparams"] == run.config["hyperparams"]  # the zoo entries it trained with are today's
        yield run, record


MIGRATED = {
    "tabular_bias": tabular_bias,
    "aggregator_breakdown": aggregator_breakdown,
    "byzantine": byzantine,
    "collaboration": collaboration,
    "comparison": comparison,
}
#: studies whose JSON records its sweep's results folder (``settings.out_dir``) or time (``seconds``)
SWEEP_RECORDED = ("tabular_truncation", "tabular_speedup", "tabular_svrpgm", "byzantine")


def noise_correction_machine(data: dict[str, Any]) -> dict[str, Any]:
    # the JSON's record and the architecture its table names
    found = re.search(r"\((\S+), (\d+) cores, shared with other jobs", (RESULTS / "noise_correction.md").read_text())
    assert found is not None and int(found[2]) == data["machine"]["cpus"]
    return {**data["machine"], "machine": found[1]}


def zoo_machine(data: dict[str, Any]) -> dict[str, Any]:
    match = re.fullmatch(r"(\S+), (\d+) CPUs \(shared\)", data["machine"])
    assert match, data["machine"]
    return {"machine": match[1], "cpus": int(match[2])}


#: studies whose JSON records the machine its runs were computed on -> that record, as ``harness.cache.machine`` has it
MACHINE_RECORDED = {
    "collaboration": lambda data: {key: data["machine"][key] for key in ("python", "cpus")},
    "comparison": lambda data: {key: data["machine"][key] for key in ("python", "cpus")},
    "noise_correction": noise_correction_machine,
    "zoo_optimize": zoo_machine,
}


def old_zoo_key(value: Any) -> str:
    """:return: the old ``zoo_optimize.py``'s cache key of a value"""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def zoo_optimize() -> None:
    """Move ``zoo_optimize``'s cache from the old script's layout into the harness's (each old file deleted)."""
    import zoo_optimize as study

    s, cache, moved = Settings(study.STUDY.settings), Cache(ROOT / "benchmarks" / "cache" / "zoo_optimize"), 0

    def move(run: Run, old_name: str) -> None:
        nonlocal moved
        old = cache.folder / old_name
        if not old.is_file():
            assert cache.has(run), f"{run.label}: neither {old} nor {cache.path(run)}"
            return
        note = f"moved from benchmarks/cache/zoo_optimize/{old_name}, the old script's cache (not recomputed)"
        cache.store(run, json.loads(old.read_text()), None, library_version=written_by(old), note=note)
        old.unlink()
        moved += 1

    for algo in s.algos:
        default = study.default_entry(s, algo)
        for run in study.final(s, algo, default, "default"):
            move(run, f"{algo}_{old_zoo_key(default)}_s{run.config['seed']}_e{s.final_episodes}.json")
        for budget in s.trial_budgets:
            run = study.study(s, algo, budget)
            settings = [s.trials, budget, s.n_evaluations, s.eval_episodes, s.n_startup_trials]
            name = f"{algo}-{study.ENV_ID}-{s.trials}x{budget}"
            move(run, f"{algo}_study_{old_zoo_key({'name': name, 'settings': settings})}.json")
            for tuned in study.tuned(s, Results({run: cache.load(run)}), algo, budget):
                move(tuned, f"{algo}_{old_zoo_key(tuned.config['entry'])}_s{tuned.config['seed']}_e{s.final_episodes}.json")
    print(f"zoo_optimize: {moved} runs moved into the harness's layout")


def main() -> None:
    from sb3_fedpg.common.cli import ArgumentParser

    ArgumentParser(description=__doc__).parse_args()  # --help, --version; no options
    for name, runs in MIGRATED.items():
        data, version = committed(name)
        cache = Cache(ROOT / "benchmarks" / "cache" / name)
        note = f"from benchmarks/results/{name}.json (the committed sweep's value; not recomputed)"
        stored = 0
        for run, value in runs(data):
            if cache.has(run) and cache.entry(run).get("note") == note:
                if cache.load(run) != value:
                    sys.exit(f"{cache.path(run)} holds {cache.load(run)!r}, the committed results {value!r}")
                continue
            cache.store(run, value, None, library_version=version, note=note)
            stored += 1
        print(f"{name}: {stored} runs stored from the committed results")
    zoo_optimize()
    for name in (*SWEEP_RECORDED, *MACHINE_RECORDED):
        data, _ = committed(name)
        cache = Cache(ROOT / "benchmarks" / "cache" / name)
        sweep = cache.sweep()
        out_dir = data.get("settings", {}).get("out_dir", sweep.out_dir if sweep else "")
        seconds = data.get("seconds", sweep.seconds if sweep else 0.0)
        machine = MACHINE_RECORDED[name](data) if name in MACHINE_RECORDED else sweep.machine if sweep else {}
        cache.write_sweep(Sweep(out_dir, seconds, machine))
        print(f"{name}: sweep record {out_dir}, {seconds:.1f} s" + (f", {machine}" if machine else ""))


if __name__ == "__main__":
    main()

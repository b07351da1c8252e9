"""
Seed the benchmark harness's cache with what only the committed results hold (issue 25: the studies moved onto
``benchmarks/harness``).

Most runs of the ported studies were recomputed into ``benchmarks/cache/<study>/`` and give the committed numbers bit
for bit. Three kinds of values cannot be recomputed, so this script takes them from the committed
``benchmarks/results/<study>.json``, each cache entry saying where it came from (``note``) and which commit wrote the
file (``library_version``):

- measurements: ``tabular_bias``'s 1,000-round timing (a wall time), ``byzantine``'s sweep time, and the machine
  that computed a sweep (``harness.MACHINE``: ``noise_correction``'s, ``comparison``'s);
- runs that the present library computes a few ulps apart (``aggregator_breakdown``: the mean's summation order
  and Weiszfeld's tolerance changed since its results were committed; the old script itself no longer reproduces
  them), and runs too long to redo here (``byzantine``: 30 trainings of 1M steps; ``comparison``: 90 runs, about an
  hour, whose script cached them under the ignored ``runs/comparison/``, while its JSON keeps every run's record);
- the sweep's record (``_sweep.json``) of the studies whose runs all came back: the results folder their JSON names
  (``settings.out_dir``), and ``byzantine``'s sweep time.

(``noise_correction``'s runs came from its committed cache: ``tools/migrate_noise_correction_cache.py``.
``lqr_bias``, ``lqr_speedup`` and ``tabular_transition`` are not seeded: the present library computes their runs a
few ulps apart from the committed ones, which hold too little to rebuild every run; their results were regenerated
from their recomputed cache.)

Run from the repository root: ``python tools/seed_harness_cache.py``. A computed entry of a seeded run is replaced
(the timing measured again on another, loaded machine); an entry it seeded before is checked against the committed
value (a mismatch stops it), so running it again changes nothing.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import MACHINE, Run, Settings, Sweep  # noqa: E402
from harness.cache import Cache  # noqa: E402

from sb3_fedpg import __version__  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def committed(name: str) -> tuple[dict[str, Any], str]:
    """:return: the committed results of a study and the library version (commit) that wrote them"""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", f"benchmarks/results/{name}.json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return json.loads((RESULTS / f"{name}.json").read_text()), f"{__version__}+{commit}"


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


def noise_correction(data: dict[str, Any]) -> Iterator[tuple[Run, Any]]:
    # the machine the sweep was measured on: the JSON's record and the architecture its table names
    found = re.search(r"\((\S+), (\d+) cores, shared with other jobs", (RESULTS / "noise_correction.md").read_text())
    assert found is not None and int(found[2]) == data["machine"]["cpus"]
    yield MACHINE, {**data["machine"], "machine": found[1]}


def comparison(data: dict[str, Any]) -> Iterator[tuple[Run, Any]]:
    # every run: its script cached them under runs/comparison/ (never committed); the JSON holds each run's record
    import comparison as study

    s = Settings(study.STUDY.settings)
    assert data["families"] == {name: study.FAMILIES[name] for name in s.families} and not data["quick"]
    assert (data["heterogeneity"], data["seeds"], len(data["runs"])) == (s.heterogeneity, s.seeds, len(study.runs(s)) - 1)
    for record in data["runs"]:
        run = study.run(s, record["family"], record["heterogeneity"], record["method"], record["seed"])
        assert record["hyperparams"] == run.config["hyperparams"]  # the zoo entries it trained with are today's
        yield run, record
    yield MACHINE, {key: data["machine"][key] for key in ("python", "cpus")}


MIGRATED = {
    "tabular_bias": tabular_bias,
    "aggregator_breakdown": aggregator_breakdown,
    "byzantine": byzantine,
    "noise_correction": noise_correction,
    "comparison": comparison,
}
#: studies whose JSON records its sweep's results folder (``settings.out_dir``) or time (``seconds``)
SWEEP_RECORDED = ("tabular_truncation", "tabular_speedup", "tabular_svrpgm", "byzantine")


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
    for name in SWEEP_RECORDED:
        data, _ = committed(name)
        cache = Cache(ROOT / "benchmarks" / "cache" / name)
        sweep = cache.sweep()
        out_dir = data.get("settings", {}).get("out_dir", sweep.out_dir if sweep else "")
        seconds = data.get("seconds", sweep.seconds if sweep else 0.0)
        cache.write_sweep(Sweep(out_dir, seconds))
        print(f"{name}: sweep record {out_dir}, {seconds:.1f} s")


if __name__ == "__main__":
    main()

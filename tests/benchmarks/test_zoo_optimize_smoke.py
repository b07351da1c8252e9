"""The zoo's --optimize acceptance study (a spec on benchmarks/harness) runs end to end in --quick mode and resumes."""

import importlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("zoo_optimize", None)
    return importlib.import_module("zoo_optimize")


def test_zoo_optimize_quick_and_resume(tmp_path, monkeypatch):
    script, cache, results = load(monkeypatch), tmp_path / "cache", tmp_path / "results"
    argv = ["--quick", "--set", 'algos=["fedpg"]', "--cache", str(cache)]
    result = script.main(argv, output=results)
    (record,) = result["studies"]
    assert record["algo"] == "fedpg" and record["trial_budget"] == 2048
    assert sum(record["study"]["trials"][state] for state in ("complete", "pruned", "failed")) == 3
    assert len(record["study"]["trial_values"]) == 3 and record["study"]["best_value"] == max(
        t["value"] for t in record["study"]["trial_values"] if t["state"] == "COMPLETE"
    )
    assert record["study"]["tuned_entry"]["n_timesteps"] == 200_000  # the entry's own budget, as written
    assert record["default_entry"]["n_timesteps"] == 4096  # the quick training budget, for both entries
    # default and tuned entries trained at the same (quick) budget, on the same seeds, each run a cache entry
    assert {r["env_steps"] >= 4096 for r in record["default"]["runs"] + record["tuned"]["runs"]} == {True}
    assert [r["seed"] for r in record["default"]["runs"]] == [r["seed"] for r in record["tuned"]["runs"]] == [100, 101]
    assert record["tuned_better"] == (record["tuned"]["summary"]["mean"] > record["default"]["summary"]["mean"])
    table = (results / "zoo_optimize.md").read_text()
    assert "| FederatedPG | 2,048 | " in table and "```yaml" in table
    cached = sorted(p.name for p in cache.glob("*.json"))
    assert len(cached) == 1 + 1 + 2 + 2  # the sweep record, the study, the default's and the tuned entry's trainings
    # a rerun trains nothing: --report builds the same report from the study's record and every run in the cache
    again = load(monkeypatch).main([*argv, "--report"], output=results)
    assert sorted(p.name for p in cache.glob("*.json")) == cached and again == result
    assert json.loads((results / "zoo_optimize.json").read_text())["config"]["quick"] is True

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zoo_optimize_quick_and_resume(tmp_path):
    script = load("zoo_optimize")
    argv = ["--quick", "--algos", "fedpg"]
    result = script.main(argv, output=tmp_path / "results", cache=tmp_path / "cache")
    (record,) = result["studies"]
    assert record["algo"] == "fedpg" and record["trial_budget"] == 2048
    assert sum(record["study"]["trials"][state] for state in ("complete", "pruned", "failed")) == 3
    assert record["study"]["tuned_entry"]["n_timesteps"] == 200_000  # the entry's own budget, as written
    # default and tuned entries trained at the same (quick) budget, on the same seeds
    assert {r["env_steps"] >= 4096 for r in record["default"]["runs"] + record["tuned"]["runs"]} == {True}
    assert [r["seed"] for r in record["default"]["runs"]] == [r["seed"] for r in record["tuned"]["runs"]]
    table = (tmp_path / "results" / "zoo_optimize.md").read_text()
    assert "| FederatedPG |" in table and "```yaml" in table
    # a rerun trains nothing: the study's record and every run come from the cache
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.json"))
    again = script.main(argv, output=tmp_path / "results", cache=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.json")) == cached
    assert again["studies"][0]["tuned"] == record["tuned"]
    assert json.loads((tmp_path / "results" / "zoo_optimize.json").read_text())["config"]["quick"] is True

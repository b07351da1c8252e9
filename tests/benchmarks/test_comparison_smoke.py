"""The comparison and collaboration benchmarks run end to end in --quick mode."""

import importlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(name, monkeypatch):
    # collaboration.py imports comparison.py from its own folder
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_comparison_quick(tmp_path, monkeypatch):
    payload = load("comparison", monkeypatch).main(["--quick"], output=tmp_path)
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["summary"]["targets"] == payload["summary"]["targets"]
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    methods = {run["method"] for run in saved["runs"]}
    assert methods == {"fedpg", "fedavg", "a2c", "ppo", "local"}
    assert {run["family"] for run in saved["runs"]} == {"cartpole", "pendulum"}
    for run in saved["runs"]:
        # every method got the same budget of total env steps (up to whole rounds / rollouts)
        budget = saved["families"][run["family"]]["budget"]
        assert budget <= run["timesteps"][-1] <= 2 * budget
        assert len(run["timesteps"]) == len(run["global_return"]) == len(run["rounds"])
        assert len(run["final_per_agent"]) == saved["families"][run["family"]]["n_agents"]
    cell = saved["summary"]["table"]["cartpole"]["1.0"]
    assert len(cell["fedpg"]["finals"]) == 2
    table = (tmp_path / "comparison.md").read_text()
    assert "Fast-FedPG" in table and "local-only" in table and "| cartpole | 1.0 |" in table
    # a second call reuses the cached runs (resume) and rebuilds the same outputs
    again = load("comparison", monkeypatch).main(["--quick"], output=tmp_path)
    assert again["summary"] == payload["summary"]


def test_collaboration_quick(tmp_path, monkeypatch):
    # a spec on benchmarks/harness: its runs cached in tmp_path/cache/collaboration
    payload = load("collaboration", monkeypatch).main(["--quick"], output=tmp_path)
    saved = json.loads((tmp_path / "collaboration.json").read_text())
    assert saved == payload and saved["quick"] is True
    assert (tmp_path / "collaboration.png").stat().st_size > 1000
    n_sweep = saved["summary"]["n_sweep"]["1.0"]
    assert set(n_sweep) == {"1", "2"}
    # the same per-agent samples per round for every N
    assert len({s["samples_per_agent_per_round"] for s in n_sweep.values()}) == 1
    assert set(saved["summary"]["h_sweep"]) == {"fedpg", "fedavg"}
    # 2 N x 2 seeds, 2 H x 2 corrections x 2 seeds, the N = 2 run at H = 2 shared by both sweeps: 10 runs
    assert len(saved["runs"]) == len(list((tmp_path / "cache" / "collaboration").glob("N*.json"))) == 10
    for run in saved["runs"]:
        assert run["rounds"] == [0, 2, 4] and len(run["global_return"]) == len(run["timesteps"]) == 3
    first = saved["runs"][0]
    assert n_sweep["1"]["final_mean"] == sum(r["global_return"][-1] for r in saved["runs"][:2]) / 2
    assert first["n_agents"] == 1 and first["seed"] == 0
    assert "rounds to target" in (tmp_path / "collaboration.md").read_text()
    again = load("collaboration", monkeypatch).main(["--quick", "--report"], output=tmp_path)  # from the cache alone
    assert again == payload

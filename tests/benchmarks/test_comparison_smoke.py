"""The comparison (benchmarks/comparison.py, on the harness) and collaboration benchmarks run end to end in --quick
mode."""

import importlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(name, monkeypatch):
    # both import neural_runs.py from their own folder
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_comparison_quick(tmp_path, monkeypatch):
    payload = load("comparison", monkeypatch).main(["--quick"], output=tmp_path)
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved == json.loads(json.dumps(payload)) and saved["quick"]
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    methods = [run["method"] for run in saved["runs"]]
    assert methods == [m for m in ("fedpg", "fedavg", "a2c", "ppo", "local") for _ in range(2)] * 2
    assert {run["family"] for run in saved["runs"]} == {"cartpole", "pendulum"}
    for run in saved["runs"]:
        # every method got the same budget of total env steps (up to whole rounds / rollouts)
        budget = saved["families"][run["family"]]["budget"]
        assert budget <= run["timesteps"][-1] <= 2 * budget
        assert len(run["timesteps"]) == len(run["global_return"]) == len(run["rounds"])
        assert len(run["final_per_agent"]) == saved["families"][run["family"]]["n_agents"]
        assert run["hyperparams"]["n_timesteps"] == budget and run["hyperparams"]["env_kwargs"] == {"heterogeneity": 1.0}
    assert saved["runs"][2]["hyperparams"]["correction"] is False  # fedavg: FedPG with the correction off
    cell = saved["summary"]["table"]["cartpole"]["1.0"]
    assert len(cell["fedpg"]["finals"]) == 2 and cell["local"]["rounds"] == 0.0 and cell["fedpg"]["rounds"] > 0
    table = (tmp_path / "comparison.md").read_text().splitlines()
    assert table[0].startswith("| family | h | Fast-FedPG | FedAvg-PG |") and "local-only, own task" in table[0]
    assert [line.split(" | ")[0:2] for line in table[2:4]] == [["| cartpole", "1.0"], ["| pendulum", "1.0"]]
    assert "(n=2)" in table[2] and table[-1].startswith("Budgets (total env steps, all agents): cartpole 2,048 steps")
    # a second call reuses the cached runs and rebuilds the same outputs
    again = load("comparison", monkeypatch).main(["--quick", "--report"], output=tmp_path)
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

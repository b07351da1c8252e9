"""The comparison at real budgets (benchmarks/ppo_comparison.py): its scoring, and a --quick run end to end."""

import importlib
import json
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def pc(monkeypatch):
    # ppo_comparison.py imports comparison.py, heterogeneity.py and neural_runs.py from its own folder
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("ppo_comparison", None)
    return importlib.import_module("ppo_comparison")


def test_target_steps_wall_and_stability(pc):
    ref = {"random": 10.0, "best": 110.0}
    run = {
        "timesteps": [0, 100, 200, 300, 400, 500],
        "global_return": [10.0, 60.0, 100.0, 95.0, 99.0, 110.0],  # scores 0, .5, .9, .85, .89, 1
        "wall": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        "cpu": [0.0, 0.5, 1.5, 2.5, 3.5, 4.5],
    }
    np.testing.assert_allclose(pc.score_of(run["global_return"], ref), [0, 0.5, 0.9, 0.85, 0.89, 1.0])
    stats = pc.target_stats(run, ref)
    assert stats == {"steps": 200.0, "wall": 2.0, "cpu": 1.5, "stability": pytest.approx(1 / 3)}
    assert pc.target_stats({**run, "global_return": [10.0] * 6}, ref)["steps"] is None
    # LQR: the score is C̄*/C̄ of the returns −C̄ (a destabilising gain, −inf, scores 0)
    np.testing.assert_allclose(pc.score_of([-20.0, -10.0, -np.inf], {"optimal": -10.0}), [0.5, 1.0, 0.0])
    # the median over seeds counts a miss as never reaching the target
    assert pc._median_with_misses([100.0, None, 300.0]) == 300.0
    assert pc._median_with_misses([100.0, None, None]) is None


def test_lqr_returns_are_the_exact_costs_of_the_policy_gain(pc):
    import types

    import torch as th

    family = pc.FAMILIES["lqr"]
    lqr = pc.LQRReturns(family, pc.HETEROGENEITY)
    # the noise benchmark's evaluator (C̄(K) / C̄*) on the same family, as an independent path through the library
    from sb3_fedpg.envs.lqr import LQR_DEFAULTS

    spread = family.get("input_scale_spread", LQR_DEFAULTS["input_scale_spread"])  # the noise benchmark spreads more
    ratio = pc.nr.lqr_evaluator({**pc.nr.LQR, "n_agents": family["n_agents"], "input_scale_spread": spread})
    rng = np.random.default_rng(0)
    for scale in (0.0, 0.05):
        weight = th.as_tensor(scale * rng.standard_normal(lqr.problem.B.T.shape), dtype=th.float32)
        model = types.SimpleNamespace(policy=types.SimpleNamespace(action_net=types.SimpleNamespace(weight=weight)))
        returns = lqr(model, None, 1)
        assert returns.shape == (family["n_agents"],)
        assert -returns.mean() / lqr.optimal_cost == pytest.approx(ratio(model), rel=1e-9)
        assert -returns.mean() > lqr.optimal_cost
    assert pc.reference_returns(family, 0) == {
        "random": None,
        "zero": pytest.approx(float(np.mean(lqr.returns(0 * weight.numpy())))),
    }


def test_acceptance_picks_the_faster_fedppo_variant(pc):
    cell = {"complete": 3, "mean": 0.0}
    cells = {
        "fedppo": {**cell, "steps_to_target": 5e4, "wall_to_target": 30.0},
        "fedppo_corr": {**cell, "steps_to_target": 4e4, "wall_to_target": 90.0},
        "ppo": {**cell, "steps_to_target": 4e4, "wall_to_target": 60.0},
    }
    assert pc.acceptance(cells) == {"best_fedppo": "fedppo_corr", "ppo": "ppo", "steps_ok": True, "wall_ok": False}
    cells["fedppo_corr"]["steps_to_target"] = None
    assert pc.acceptance(cells) == {"best_fedppo": "fedppo", "ppo": "ppo", "steps_ok": False, "wall_ok": True}
    assert pc.acceptance({"ppo": cells["ppo"]})["steps_ok"] is None  # pending, not a miss


def test_acceptance_measures_against_the_central_ppo_that_gets_there_first(pc):
    cell = {"complete": 3, "mean": 0.0}
    cells = {
        "fedppo": {**cell, "steps_to_target": 5e4, "wall_to_target": 30.0},
        "ppo": {**cell, "steps_to_target": None, "wall_to_target": None},
        "ppo_zoo": {**cell, "steps_to_target": 4e4, "wall_to_target": 20.0},
    }
    assert pc.acceptance(cells) == {"best_fedppo": "fedppo", "ppo": "ppo_zoo", "steps_ok": False, "wall_ok": False}
    cells["ppo_zoo"] = {"complete": 0}  # a second central PPO still running: pending, not measured against one
    assert pc.acceptance(cells)["steps_ok"] is None


def test_optional_methods_run_only_where_listed(pc):
    assert {"ppo_zoo", "ppo_noclip", "fedppo_pa"} <= set(pc.methods_of(pc.FAMILIES["halfcheetah"]))
    for name, family in pc.FAMILIES.items():
        assert set(pc.OPTIONAL_METHODS) & set(pc.methods_of(family)) == set(family.get("extra_methods", ())), name
    assert "fedppo_pa" not in pc.methods_of(pc.FAMILIES["lqr"])
    # the same hyperparameters as the zoo entry with none of the family's PPO overrides
    from sb3_fedpg.zoo.config import load_config_file, select_entry

    conf = pc.ROOT / "zoo_configs" / "ppo.yml"
    zoo = select_entry(load_config_file(conf), "sb3_fedpg/HeteroHalfCheetah-v0", str(conf))
    _, entry = pc.nr.algo_hyperparams(pc.FAMILIES["halfcheetah"], "ppo_zoo", pc.HETEROGENEITY, pc.METHODS)
    assert all(entry[k] == v for k, v in zoo.items() if k not in ("n_timesteps", "env_kwargs"))
    _, shared = pc.nr.algo_hyperparams(pc.FAMILIES["halfcheetah"], "ppo", pc.HETEROGENEITY, pc.METHODS)
    assert shared["learning_rate"] != entry["learning_rate"]


def test_run_key_follows_the_library_defaults(pc, monkeypatch):
    # a changed constructor default of the algorithm (e.g. the lead's anchor_batches) must start new runs
    family = pc.QUICK_FAMILIES["cartpole"]
    key = pc.run("cartpole", family, "fedpg", 0).key
    assert key == pc.run("cartpole", family, "fedpg", 0).key
    real = pc._constructor_defaults
    monkeypatch.setattr(pc, "_constructor_defaults", lambda cls: {**real(cls), "anchor_batches": 7})
    assert pc.run("cartpole", family, "fedpg", 0).key != key
    # ... but not a default the method overrides: FedAvg-PG's correction=False is the same run whatever the default
    monkeypatch.setattr(pc, "_constructor_defaults", real)
    fedavg = pc.run("cartpole", family, "fedavg", 0)
    monkeypatch.setattr(pc, "_constructor_defaults", lambda cls: {**real(cls), "correction": "other"})
    assert pc.run("cartpole", family, "fedavg", 0).key == fedavg.key
    # a method that spells out a default trains with the arguments of the one that relies on it
    monkeypatch.setattr(pc, "_constructor_defaults", real)
    explicit = pc.MethodSpec("fedpg", {"correction": False, "variance_control": "none"})  # "none" is the default
    spelled = pc.run("cartpole", family, "fedavg_explicit", 0, methods={**pc.METHODS, "fedavg_explicit": explicit})
    assert spelled.config["hyperparams"] == fedavg.config["hyperparams"]
    # another study's method (ppo_epochs') is in the run's configuration: worker processes need no patched METHODS
    assert spelled.config["spec"] == ["fedpg", {"correction": False, "variance_control": "none"}, False]


def test_quick_lqr_sweep_and_report(pc, tmp_path):
    payload = pc.main(["--quick", "--families", "lqr"], output=tmp_path)
    runs = payload["runs"]
    assert {(r["method"], r["seed"]) for r in runs} == {(m, s) for m in ("fedpg", "fedppo_corr", "ppo") for s in (0, 1)}
    budget = pc.QUICK_FAMILIES["lqr"]["budget"]
    for run in runs:
        assert budget <= run["timesteps"][-1] <= 2 * budget
        assert len(run["timesteps"]) == len(run["global_return"]) == len(run["wall"]) == len(run["cpu"])
        assert np.all(np.diff(run["wall"]) >= 0) and run["wall"][-1] <= run["seconds"]
        assert 0 < run["eval_wall"] < run["seconds"]
    cell = payload["summary"]["lqr"]
    optimal = cell["reference"]["optimal"]
    # exact evaluation: no gain beats the Riccati optimum, and J is −C̄(K) of the gain the model holds
    assert all(max(r["global_return"]) <= optimal * (1 - 1e-9) for r in runs)
    assert all(0 < c["score"] <= 1 for c in cell["methods"].values() if c["complete"])
    table = (tmp_path / "ppo_comparison.md").read_text()
    assert "| lqr | FederatedPPO + correction | 2/2 |" in table and "| lqr | SB3 PPO (central, pooled) | 2/2 |" in table
    assert "Runs complete: 6 of 6 (2 seeds)" in table
    assert "| lqr | 2,048 | 2 |" in (tmp_path / "ppo_comparison_hyperparams.md").read_text()
    assert (tmp_path / "ppo_comparison.png").stat().st_size > 1000
    # a second call resumes from the cache (6 runs and 2 references): nothing reruns, the same outputs
    cache = tmp_path / "cache" / "ppo_comparison"
    stamps = {path: path.stat().st_mtime_ns for path in cache.glob("*.json")}
    assert len([path for path in stamps if not path.name.startswith("_")]) == 8
    again = pc.main(["--quick", "--families", "lqr", "--report"], output=tmp_path)
    assert json.loads(json.dumps(again["summary"])) == json.loads(json.dumps(payload["summary"]))
    assert {path: path.stat().st_mtime_ns for path in cache.glob("*.json")} == stamps


@pytest.mark.slow
def test_quick_every_method(pc, tmp_path):
    payload = pc.main(["--quick"], output=tmp_path)
    every = set(pc.METHODS) - set(pc.OPTIONAL_METHODS)
    assert {r["method"] for r in payload["runs"] if r["family"] == "cartpole"} == every
    local = [r for r in payload["runs"] if r["method"] == "local_ppo"]
    n = pc.QUICK_FAMILIES["cartpole"]["n_agents"]
    assert all(len(r["final_per_agent"]) == n and r["timesteps"][-1] >= pc.QUICK_FAMILIES["cartpole"]["budget"] for r in local)
    assert "Runs complete: 28 of 28" in (tmp_path / "ppo_comparison.md").read_text()


def test_shared_policy_bound_is_the_best_common_speed(pc):
    from sb3_fedpg.envs import HalfCheetahVelocityReward

    family = pc.FAMILIES["halfcheetah"]
    bound = pc.shared_policy_bound(family)
    targets = HalfCheetahVelocityReward(family["n_agents"], pc.HETEROGENEITY).targets
    speeds = np.linspace(0.0, 5.0, 5001)
    per_step = -np.abs(speeds[:, None] - targets[None, :]).mean(1)  # every agent at the same speed, no control cost
    assert bound == pytest.approx(1000 * per_step.max(), abs=1e-3)
    assert bound == pytest.approx(-1000.0)  # targets 0.5, 1.5, 2.5, 3.5: the median speed loses 1 per step
    assert pc.shared_policy_bound(pc.FAMILIES["cartpole"]) is None

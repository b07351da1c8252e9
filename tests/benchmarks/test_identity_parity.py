"""SB3's identity tasks at SB3's test budgets (benchmarks/identity_parity.py): its settings, cache keys, rule and report."""

import importlib
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture
def parity(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("identity_parity", None)
    return importlib.import_module("identity_parity")


def test_runs_take_the_settings_of_the_sb3_algorithm_they_stand_for(parity):
    assert parity.run_config("a2c", "Discrete", 3)["kwargs"] == parity.run_config("fedpg", "Discrete", 3)["kwargs"]
    assert parity.run_config("ppo", "Box", 0)["kwargs"] == parity.run_config("fedppo", "Box", 0)["kwargs"]
    box = parity.run_config("fedpg_n5_rmsprop_a2c", "Box", 0)
    # a candidate's optimiser joins the test's policy_kwargs; the critic's step size is the test's learning rate
    assert box["kwargs"]["policy_kwargs"]["net_arch"] == [64, 64]
    assert box["kwargs"]["policy_kwargs"]["optimizer_class"] == "RMSprop"
    assert box["kwargs"]["critic_learning_rate"] == box["kwargs"]["learning_rate"] == 1e-3
    assert (box["total_timesteps"], parity.run_config("fedppo", "Box", 0)["total_timesteps"]) == (2000, 1000)


def test_cache_keys_differ_by_method_task_and_seed(parity):
    keys = {parity.run_key(m, t, s) for m in parity.METHODS for t in parity.TASKS for s in (0, 1)}
    assert len(keys) == len(parity.METHODS) * len(parity.TASKS) * 2
    assert parity.run_key("fedpg", "MultiBinary", 3).startswith("FederatedPG_MultiBinary_s3_")


def test_verdict_rule(parity):
    def cell(rewards):
        return parity.summarize([{"reward": r, "env_steps": 1, "cpu_seconds": 0.0} for r in rewards], "Discrete")

    sb3 = cell([100.0] * 10)
    assert parity.verdict(cell([100.0] * 9 + [95.0]), sb3)["verdict"] == "level"
    behind = parity.verdict(cell([100.0] * 4 + [89.0] * 6), cell([100.0] * 10))
    assert (behind["rewards_vs_sb3"], behind["passes_vs_sb3"], behind["verdict"]) == ("worse", "worse", "behind")
    assert parity.verdict(cell([100.0] * 6 + [95.0] * 4), cell([60.0] * 10))["verdict"] == "ahead"


def test_report_is_rebuilt_from_the_cache_identically(parity, tmp_path):
    payload = parity.main(["--report-only"], output=tmp_path)
    # every cell keeps its per-seed rewards beside its verdict
    assert all(len(payload["cells"][m][t]["rewards"]) == len(parity.SEEDS) for m in parity.METHODS for t in parity.TASKS)
    for name in ("identity_parity.json", "identity_parity.md"):
        assert (tmp_path / name).read_text() == (RESULTS / name).read_text(), f"{name}: run benchmarks/identity_parity.py"

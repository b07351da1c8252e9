"""SB3's identity tasks at SB3's test budgets (benchmarks/identity_parity.py, a study on benchmarks/harness): its
settings, runs, migrated cache, rule and report."""

import importlib
import json
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
    assert parity.config("a2c", "Discrete", 3, 20)["kwargs"] == parity.config("fedpg", "Discrete", 3, 20)["kwargs"]
    assert parity.config("ppo", "Box", 0, 20)["kwargs"] == parity.config("fedppo", "Box", 0, 20)["kwargs"]
    box = parity.config("fedpg_n5_rmsprop_a2c", "Box", 0, 20)
    # a candidate's optimiser joins the test's policy_kwargs; the critic's step size is the test's learning rate
    assert box["kwargs"]["policy_kwargs"]["net_arch"] == [64, 64]
    assert box["kwargs"]["policy_kwargs"]["optimizer_class"] == "RMSprop"
    assert box["kwargs"]["critic_learning_rate"] == box["kwargs"]["learning_rate"] == 1e-3
    assert (box["total_timesteps"], parity.config("fedppo", "Box", 0, 20)["total_timesteps"]) == (2000, 1000)


def test_runs_are_every_method_task_and_seed_and_the_rows_bring_their_sb3_reference(parity):
    settings = parity.Settings(parity.STUDY.settings)
    runs = parity.runs(settings)
    assert len({run.key for run in runs}) == len(runs) == len(parity.METHODS) * 4 * 10
    assert parity.run(settings, "fedpg", "MultiBinary", 3).label == "fedpg_MultiBinary_s3"
    assert parity.methods(parity.Settings(settings, methods=["fedppo", "fedpg_n5_sgd"])) == [
        "a2c",
        "ppo",
        "fedppo",
        "fedpg_n5_sgd",
    ]


def test_the_migrated_cache_names_the_old_file_of_each_run(parity, monkeypatch):
    # tools/migrate_identity_parity_cache.py found each run's old file by the digest of its configuration
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    migrate = importlib.import_module("migrate_identity_parity_cache")
    for run in parity.runs(parity.Settings(parity.STUDY.settings)):
        entry = json.loads((migrate.FOLDER / run.file_name).read_text())
        assert entry["note"].startswith(f"from benchmarks/cache/identity_parity/{migrate.old_name(dict(run.config))} ")
        assert set(entry["result"]) == {"reward", "episode_std", "env_steps", "train_cpu_seconds", "cpu_seconds", "machine"}


def test_verdict_rule(parity):
    def cell(rewards):
        return parity.summarize([{"reward": r, "env_steps": 1, "cpu_seconds": 0.0} for r in rewards], "Discrete", range(10))

    sb3 = cell([100.0] * 10)
    assert parity.verdict(cell([100.0] * 9 + [95.0]), sb3)["verdict"] == "level"
    behind = parity.verdict(cell([100.0] * 4 + [89.0] * 6), cell([100.0] * 10))
    assert (behind["rewards_vs_sb3"], behind["passes_vs_sb3"], behind["verdict"]) == ("worse", "worse", "behind")
    assert parity.verdict(cell([100.0] * 6 + [95.0] * 4), cell([60.0] * 10))["verdict"] == "ahead"
    assert cell([100.0] * 3 + [50.0] * 7)["test_seed_reward"] == 50.0  # seed 3, the test's own


def test_report_of_some_rows_is_the_full_report_s_cells_of_those_rows(parity, tmp_path):
    # --report is tests/benchmarks/test_harness.py's (PORTED): the full report comes back byte for byte
    payload = parity.main(["--report", "--methods", "fedppo", "--out-dir", str(tmp_path)])
    full = json.loads((RESULTS / "identity_parity.json").read_text())
    assert list(payload["cells"]) == ["ppo", "fedppo"]
    assert payload["cells"] == {m: full["cells"][m] for m in ("ppo", "fedppo")}
    assert all(len(payload["cells"][m][t]["rewards"]) == 10 for m in ("ppo", "fedppo") for t in payload["tasks"])
    assert "| Discrete | PPO |" in (tmp_path / "identity_parity.md").read_text()

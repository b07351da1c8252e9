"""The HalfCheetah heterogeneity probe (benchmarks/ppo_heterogeneity_probe.py): its references, cache keys and report."""

import importlib
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("ppo_heterogeneity_probe", None)
    return importlib.import_module("ppo_heterogeneity_probe")


def test_references_at_both_heterogeneities(probe):
    # targets 2, 2, 2, 2 at h = 0 and 0.5, 1.5, 2.5, 3.5 at h = 1; 1000-step episodes
    assert probe.standing_still(0.0) == pytest.approx(-2000.0)
    assert probe.standing_still(1.0) == pytest.approx(-2000.0)
    assert probe.bound(0.0) == 0.0
    assert probe.bound(1.0) == pytest.approx(-1000.0)


def test_cache_keys_name_method_heterogeneity_and_seed(probe):
    keys = {probe.run(m, h, s).key for m in ("ppo", "fedppo") for h in (0.0, 0.5) for s in (0, 1)}
    assert len(keys) == 8
    assert probe.run("ppo", 0.0, 1).config["heterogeneity"] == 0.0
    # h = 1: the comparison's own runs, in its cache
    assert probe.run("ppo", 1.0, 1) == probe.pc.run("halfcheetah", probe.pc.FAMILIES["halfcheetah"], "ppo", 1)
    assert probe.cache(1.0).folder.name == "ppo_comparison" and probe.cache(0.0).folder == probe.CACHE


def test_report_reads_both_caches(probe, tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(probe, "OUTPUT", tmp_path / "out" / "probe")
    run = {"final_global": -500.0, "timesteps": [0, 10], "global_return": [-2000.0, -500.0]}
    probe.cache(0.0).store(probe.run("ppo", 0.0, 0), run, 1.0)
    result = probe.report(["ppo"], [0])
    rows = {(r["heterogeneity"], r["method"]): r for r in result["rows"]}
    assert rows[(0.0, "ppo")]["fraction_of_gap"][0] == pytest.approx(0.75)  # (-500 + 2000) / (0 + 2000)
    # h = 1 comes from ppo_comparison's committed cache, when its runs are there
    if (1.0, "ppo") in rows:
        assert rows[(1.0, "ppo")]["shared_policy_bound"] == pytest.approx(-1000.0)
    assert (tmp_path / "out" / "probe.md").read_text().count("| 0 | SB3 PPO") == 1
    assert (tmp_path / "out" / "probe.png").exists()

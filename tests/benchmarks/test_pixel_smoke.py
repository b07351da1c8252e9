import importlib
import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pixel_throughput_quick(tmp_path):
    payload = load("pixel_throughput").main(["--quick"], output=tmp_path)
    saved = json.loads((tmp_path / "pixel_throughput.json").read_text())
    assert saved["ratio_to_sb3_ppo_median"] == payload["ratio_to_sb3_ppo_median"]
    assert set(saved["env_steps_per_s"]) == {"fedpg/SmallCNN", "federated_ppo/SmallCNN", "sb3_ppo/SmallCNN", "raw_env"}
    assert all(v > 0 for values in saved["env_steps_per_s"].values() for v in values)
    assert "SB3 PPO (pooled)" in (tmp_path / "pixel_throughput.md").read_text()


@pytest.mark.slow
def test_pixel_learning_quick(tmp_path, monkeypatch):
    # the seeds run in spawned processes, which import the script by name
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    payload = importlib.import_module("pixel_learning").main(["--quick"], output=tmp_path)
    final = payload["final"][0]
    assert final["env_steps"] >= 1024 and payload["reference"]["optimal"] > payload["reference"]["random"]
    assert "(0 random, 1 optimal)" in (tmp_path / "pixel_learning.md").read_text()


def test_committed_pixel_results_are_consistent():
    learning = json.loads((ROOT / "benchmarks" / "results" / "pixel_learning.json").read_text())
    reference = learning["reference"]
    for final in learning["final"]:
        score = (final["J"] - reference["random"]) / (reference["optimal"] - reference["random"])
        assert final["score"] == pytest.approx(score)
    common = load("pixel_common")
    assert learning["config"]["fedpg_kwargs"] == common.FEDPG_KWARGS  # the reported run is the current configuration
    throughput = json.loads((ROOT / "benchmarks" / "results" / "pixel_throughput.json").read_text())
    assert throughput["config"]["fedpg_kwargs"] == common.FEDPG_KWARGS

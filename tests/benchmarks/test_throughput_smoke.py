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


def test_throughput_quick(tmp_path):
    payload = load("throughput").main(["--quick"], output=tmp_path)
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["ratios"] == payload["ratios"]
    assert (tmp_path / "throughput.png").stat().st_size > 0
    kinds = {row["kind"] for row in saved["rows"]}
    assert kinds == {"raw_vector_env", "raw_env", "fedpg", "a2c", "ppo", "mujoco_raw_vector_env", "mujoco_fedpg"}
    assert all(row["steps_per_second"] > 0 for row in saved["rows"])
    assert "FederatedPG / SB3 A2C" in (tmp_path / "throughput.md").read_text()


def test_ppo_speed_quick(tmp_path):
    result = load("ppo_speed").main(["--quick", "--output", str(tmp_path / "ppo_speed")])
    saved = json.loads((tmp_path / "ppo_speed.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["headline"] == "sb3_ppo_equal_steps"
    for rival, multiple in [("sb3_ppo_equal_steps", 8), ("sb3_ppo_equal_minibatch", 1)]:
        comparison = saved["comparisons"][rival]
        assert comparison["sb3_batch_size"] == 64 * multiple
        for speeds, ratios in [("env_steps_per_s", "ratio_per_repeat"), ("env_steps_per_cpu_s", "cpu_ratio_per_repeat")]:
            fed, sb3 = saved[speeds]["federated_ppo"], saved[speeds][rival]
            assert comparison[ratios] == pytest.approx([f / s for f, s in zip(fed, sb3, strict=True)])
            assert min(fed + sb3) > 0
    speeds = saved["env_steps_per_s"]
    cost = [d / u for d, u in zip(speeds["federated_ppo_default"], speeds["federated_ppo"], strict=True)]
    assert saved["correction_cost"]["ratio_per_repeat"] == pytest.approx(cost)
    table = (tmp_path / "ppo_speed.md").read_text()
    assert "default (SNR-damped surrogate correction)" in table and "of no correction" in table
    assert "per CPU-second" in table and "load average" in table
    assert "equal optimiser steps" in table and "equal minibatch size" in table


def test_update_readme_refills_blocks(tmp_path):
    (tmp_path / "demo.md").write_text("| a | b |\n")
    text = "before\n<!-- results:demo -->\nold\n<!-- /results:demo -->\nafter"
    out = load("update_readme").refill(text, tmp_path)
    assert out == "before\n<!-- results:demo -->\n| a | b |\n<!-- /results:demo -->\nafter"


def test_update_readme_refuses_a_missing_table_but_waits_for_the_setup_times(tmp_path):
    update = load("update_readme")
    with pytest.raises(FileNotFoundError, match="results:nothing"):
        update.refill("<!-- results:nothing -->\n<!-- /results:nothing -->", tmp_path)
    # the README's set-up times come from timing the test suite itself: empty until tools/time_setup.py ran
    empty = "<!-- results:setup_times -->\n<!-- /results:setup_times -->"
    assert update.refill(empty, tmp_path) == empty
    (tmp_path / "setup_times.md").write_text("| command | install | run |\n")
    assert "| command | install | run |" in update.refill(empty, tmp_path)


def test_roofline_quick(tmp_path):
    roofline = load("roofline")
    data = roofline.main(["--quick", "--cache", str(tmp_path / "cache")], output=tmp_path)
    assert set(data["summary"]) == set(roofline.ALGORITHMS)
    for name, counts in data["counts"].items():
        # every algorithm's round does matrix products in both phases, and the split adds up to the counter's total
        assert counts["matmul_calls"]["rollout"] > 0 and counts["matmul_calls"]["update"] > 0, name
        assert counts["flops"]["rollout"] > 0 and counts["flops"]["update"] > 0, name
        assert counts["recorded_flops"] == counts["counter_flops"], name  # torch's counter and the shapes agree
        m = data["summary"][name]
        assert m["rollout"] > 0 and m["update"] > 0 and m["env"] > 0 and m["mm_update"] > 0, name
    # the rollout's forward passes: one 64x64 MLP actor per sample at least (2 FLOPs per multiply-add)
    obs, hidden, actions = 4, 64, 2
    actor = 2 * (obs * hidden + hidden * hidden + hidden * actions)
    fedpg = data["counts"]["FederatedPG"]
    assert fedpg["flops"]["rollout"] >= actor * fedpg["round_steps"]
    assert (tmp_path / "roofline.png").stat().st_size > 0
    assert "| FederatedPPO |" in (tmp_path / "roofline.md").read_text()


def test_flops_of_a_recorded_product():
    import torch as th

    flops_of = load("roofline")._flops_of
    f32 = th.float32
    assert flops_of(th.ops.aten.mm.default, [((3, 4), f32), ((4, 5), f32)]) == 2 * 3 * 4 * 5
    assert flops_of(th.ops.aten.addmm.default, [((5,), f32), ((3, 4), f32), ((4, 5), f32)]) == 2 * 3 * 4 * 5
    assert flops_of(th.ops.aten.bmm.default, [((2, 3, 4), f32), ((2, 4, 5), f32)]) == 2 * 2 * 3 * 4 * 5
    assert flops_of(th.ops.aten.baddbmm.default, [((2, 1, 5), f32), ((2, 3, 4), f32), ((2, 4, 5), f32)]) == 2 * 2 * 3 * 4 * 5


def test_scaling_quick(tmp_path, monkeypatch):
    # its measurements run in spawned processes, which unpickle scaling._one by name: the module must be importable
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import scaling

    data = scaling.main(["--quick", "--cache", str(tmp_path / "cache")], output=tmp_path)
    for algorithm, by_n in data["summary"].items():
        assert set(by_n) == {"2", "4"}, algorithm
        assert all(m["steps_per_s"] > 0 and m["steps_per_cpu_s"] > 0 and m["peak_mb"] > 50 for m in by_n.values())
    assert "| 4 |" in (tmp_path / "scaling.md").read_text() and (tmp_path / "scaling.png").stat().st_size > 0

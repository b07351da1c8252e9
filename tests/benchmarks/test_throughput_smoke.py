import importlib.util
import json
import pathlib

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


def test_update_readme_refills_blocks(tmp_path):
    (tmp_path / "demo.md").write_text("| a | b |\n")
    text = "before\n<!-- results:demo -->\nold\n<!-- /results:demo -->\nafter"
    out = load("update_readme").refill(text, tmp_path)
    assert out == "before\n<!-- results:demo -->\n| a | b |\n<!-- /results:demo -->\nafter"

"""The heterogeneity benchmark runs end to end in --quick mode and resumes from its cache."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("heterogeneity", ROOT / "benchmarks" / "heterogeneity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heterogeneity_quick(tmp_path):
    payload = load().main(["--quick"], output=tmp_path)
    saved = json.loads((tmp_path / "heterogeneity.json").read_text())
    cell = saved["summary"]["pointmass"]["1.0"]
    assert set(cell["methods"]) == {
        "central",
        "fast",
        "fedavg",
        "fast_small",
        "fedavg_small",
        "central_sgd",
        "fedavg_sgd",
        "local",
        "oneshot",
    }
    assert len(cell["cross"]) == len(cell["cross"][0]) == 2  # every local policy on every agent's task
    assert cell["j_best"] == max(m["mean"] for m in cell["methods"].values())
    crit = cell["criterion"]
    assert crit["heterogeneous"] == (crit["local_below_70"] and crit["fedavg_below_best"])
    assert crit["local_below_70"] == (cell["methods"]["local"]["score"] <= 0.7)
    assert (tmp_path / "heterogeneity_pointmass.png").stat().st_size > 1000
    table = (tmp_path / "heterogeneity.md").read_text()
    assert "| pointmass | 1.0 |" in table and "heterogeneous?" in table
    again = load().main(["--quick"], output=tmp_path)  # cached runs: same summary, nothing retrained
    assert json.dumps(again["summary"], default=float) == json.dumps(payload["summary"], default=float)

"""The noise-correction benchmark runs end to end in --quick mode and resumes from its cache."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("noise_correction", ROOT / "benchmarks" / "noise_correction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_noise_correction_quick(tmp_path):
    module = load()
    payload = module.main(["--quick"], output=tmp_path)
    saved = json.loads((tmp_path / "noise_correction.json").read_text())
    cell = saved["summary"]["pointmass"]["20"]
    assert set(cell["methods"]) == {"fedavg", "paper", "default", "filtered", "auto_filtered"} == set(module.methods_at(20))
    for method, entry in cell["methods"].items():
        assert len(entry["finals"]) == 2
        assert entry["verdict"] in {"yes", "no", "worse", "diverged", "—"}
        if entry["diverged"] == 0 and method != "fedavg":
            spread = entry["std"] + cell["methods"]["fedavg"]["std"]
            diff = entry["minus_fedavg"]
            assert entry["verdict"] == ("yes" if diff > spread else "worse" if -diff > spread else "no")
    # the noise metrics are logged each round and read back: the SNR for every method, the gain for the filter
    assert cell["methods"]["paper"]["snr"] is not None and 0 < cell["methods"]["filtered"]["gain"] <= 1
    # the default's (H/10)² = 4 anchor batches are counted: three more batches per round than the paper's
    per_round = {m: cell["methods"][m]["steps"] / cell["methods"][m]["rounds"] for m in ("default", "paper")}
    assert per_round["default"] == per_round["paper"] * 23 / 20
    for name in ("noise_correction.png", "noise_correction_rounds.png"):
        assert (tmp_path / name).stat().st_size > 1000
    table = (tmp_path / "noise_correction.md").read_text()
    assert "| pointmass | 20 | FedAvg-PG |" in table and "beats FedAvg by > spread?" in table
    runs = {path: path.stat().st_mtime_ns for path in (tmp_path / "noise_correction_runs").glob("*.json")}
    assert runs
    again = module.main(["--quick"], output=tmp_path)  # cached runs: same summary, nothing retrained
    assert again["summary"] == payload["summary"]
    assert {path: path.stat().st_mtime_ns for path in runs} == runs  # no cached run was rewritten

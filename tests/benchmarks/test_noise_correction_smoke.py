"""The noise-correction study (benchmarks/noise_correction.py, on the harness) runs end to end in --quick mode, and a
second invocation reports from its cache without training."""

import importlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("noise_correction", None)
    return importlib.import_module("noise_correction")


def test_noise_correction_quick(tmp_path, monkeypatch):
    module = load(monkeypatch)
    payload = module.main(["--quick", "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "noise_correction.json").read_text())
    assert saved == json.loads(json.dumps(payload)) and saved["quick"] and not saved["partial"]
    cell = saved["summary"]["pointmass"]["20"]
    # the default and both filtered variants run at H = 20; the previous default H // 5 only at H = 50
    assert list(cell["methods"]) == ["fedavg", "paper", "default", "filtered", "auto_filtered"]
    for method, entry in cell["methods"].items():
        assert len(entry["finals"]) == 2
        if entry["diverged"] == 0 and method != "fedavg":
            spread = entry["std"] + cell["methods"]["fedavg"]["std"]
            diff = entry["minus_fedavg"]
            assert entry["verdict"] == ("yes" if diff > spread else "worse" if -diff > spread else "no")
    # the noise metrics are logged each round and read back: the SNR for every corrected method, the gain for the filter
    assert cell["methods"]["paper"]["snr"] is not None and 0 < cell["methods"]["filtered"]["gain"] <= 1
    assert cell["methods"]["fedavg"]["snr"] is None and cell["methods"]["paper"]["gain"] is None
    # the default's (H/10)² = 4 anchor batches are counted: three more batches per round than the paper's
    per_round = {m: cell["methods"][m]["steps"] / cell["methods"][m]["rounds"] for m in ("default", "paper")}
    assert per_round["default"] == per_round["paper"] * 23 / 20
    for name in ("noise_correction.png", "noise_correction_rounds.png"):
        assert (tmp_path / name).stat().st_size > 1000
    table = (tmp_path / "noise_correction.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| pointmass | 20 |")]
    assert [row.split(" | ")[2] for row in rows] == [module.METHODS[m][0] for m in cell["methods"]]
    assert rows[0].endswith("| — | — |") and "beats FedAvg by > spread?" in table[0]
    assert any(line.startswith("Compute (") and "pointmass" in line for line in table)
    # ten runs, a file each in the cache, and the machine that computed them in _sweep.json (the JSON's and the table's);
    # a second invocation trains nothing and rewrites none of them
    cache = tmp_path / "cache" / "noise_correction"
    runs = {path: path.stat().st_mtime_ns for path in cache.glob("[!_]*.json")}
    machine = json.loads((cache / "_sweep.json").read_text())["machine"]
    assert len(runs) == 10 and saved["machine"] == {k: machine[k] for k in ("platform", "python", "cpus")}
    again = load(monkeypatch).main(["--quick", "--report", "--out-dir", str(tmp_path)])
    assert again["summary"] == payload["summary"]
    assert {path: path.stat().st_mtime_ns for path in runs} == runs

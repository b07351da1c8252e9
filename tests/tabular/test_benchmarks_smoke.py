"""Each tabular benchmark's main() runs in --quick mode and writes its JSON and PNG."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NAMES = [
    "tabular_bias",
    "tabular_heterogeneity",
    "tabular_speedup",
    "tabular_communication",
    "tabular_truncation",
    "tabular_svrpgm",
]


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_quick(name, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module(name)
    data = module.main(["--quick", "--out-dir", str(tmp_path)])
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert json.loads((tmp_path / f"{name}.json").read_text()).keys() == json.loads(json.dumps(data, default=str)).keys()
    sys.modules.pop(name, None)

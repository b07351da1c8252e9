"""The heterogeneity benchmark (a spec on benchmarks/harness) runs end to end in --quick mode and reports from its cache."""

import importlib
import json
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("heterogeneity", None)
    return importlib.import_module("heterogeneity")


def test_heterogeneity_quick(tmp_path, monkeypatch):
    study, cache = load(monkeypatch), tmp_path / "cache"
    payload = study.main(["--quick", "--cache", str(cache)], output=tmp_path)
    saved = json.loads((tmp_path / "heterogeneity.json").read_text())
    assert saved == payload and saved["quick"] is True and saved["seeds"] == [0, 1]
    cell = saved["summary"]["pointmass"]["1.0"]
    assert set(cell["methods"]) == {*study.FEDERATED, "local", "oneshot"}
    assert len(cell["cross"]) == len(cell["cross"][0]) == 2  # every local policy on every agent's task
    # non-finite values are strict JSON ("-inf" for a diverged method, null for its spread)
    means = {name: float(m["mean"]) for name, m in cell["methods"].items()}
    assert cell["best_method"] == max(means, key=means.get) and cell["j_best"] == means[cell["best_method"]]
    assert cell["methods"][cell["best_method"]]["score"] == 1.0
    assert cell["j_random"] < cell["j_best"] and all(math.isfinite(x) for x in cell["oneshot_per_task"])
    crit = cell["criterion"]
    assert crit["heterogeneous"] == (crit["local_below_70"] and crit["fedavg_below_best"])
    assert crit["local_below_70"] == (cell["methods"]["local"]["score"] <= 0.7)
    assert (tmp_path / "heterogeneity_pointmass.png").stat().st_size > 1000
    table = (tmp_path / "heterogeneity.md").read_text()
    assert "| pointmass | 1.0 |" in table and "heterogeneous?" in table and "pointmass 4,000 env steps (N = 2)" in table
    # 7 federated methods, local-only and the random reference, 2 seeds each; a rerun computes nothing
    entries = sorted(p.name for p in cache.glob("pointmass_h1.0_*.json"))
    assert len(entries) == 18
    again = load(monkeypatch).main(["--quick", "--cache", str(cache), "--report"], output=tmp_path)
    assert again == payload and sorted(p.name for p in cache.glob("pointmass_h1.0_*.json")) == entries


def floats(value):
    """:return: the report's values from their strict-JSON encoding (``"-inf"``/``"inf"``, ``null`` for NaN)"""
    if isinstance(value, dict):
        return {key: floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [floats(item) for item in value]
    return float(value) if value in ("inf", "-inf") else math.nan if value is None else value


def test_committed_tables_and_heatmaps_from_the_committed_summary(tmp_path, monkeypatch):
    # the committed JSON keeps the summary the report is drawn from (test_harness's PORTED rebuilds the JSON and the
    # Markdown from the committed cache): the spec's tables rebuild the committed ones from the summary alone byte for
    # byte, and its heat-maps the committed ones' size (their pixels depend on the matplotlib version and fonts too)
    import matplotlib

    matplotlib.use("Agg")
    study, results = load(monkeypatch), ROOT / "benchmarks" / "results"  # benchmarks/ on sys.path: the harness too
    from harness import Report
    from harness.writer import write

    data = floats(json.loads((results / "heterogeneity.json").read_text()))
    assert "x86_64" in data["machine"]["platform"]
    machine = {"machine": "x86_64", "cpus": data["machine"]["cpus"]}
    markdown = study.markdown(data["summary"], data["families"], data["run_seconds"], machine)
    assert markdown == (results / "heterogeneity.md").read_text()
    figures = {f"heterogeneity_{name}.png": study.heatmap(name, per_h) for name, per_h in data["summary"].items()}
    for path in write("heterogeneity", Report({}, extra_figures=figures, dpi=110), tmp_path)[1:]:
        assert path.read_bytes()[16:24] == (results / path.name).read_bytes()[16:24], path.name  # PNG width, height

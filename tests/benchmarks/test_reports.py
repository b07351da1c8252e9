import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tabular_report_matches_committed_results():
    report = load("tabular_report")
    table = report.acceptance_table(RESULTS)
    met = json.loads((RESULTS / "tabular_bias.json").read_text())["acceptance"]["met_per_seed"]
    misses = sum(not ok for flags in met.values() for ok in flags)
    assert table.count("**(missed)**") == misses
    claims = report.claims_table(RESULTS)
    slope = json.loads((RESULTS / "tabular_speedup.json").read_text())["homogeneous"]["slope"]
    assert f"**{slope:.2f}**" in claims


def test_committed_documents_are_in_sync_with_results():
    # README and docs show exactly the generated tables (run benchmarks/update_readme.py after a benchmark).
    update = load("update_readme")
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = document.read_text()
        assert update.refill(text) == text, f"{document.name} is out of date: run python benchmarks/update_readme.py"


def test_byzantine_quick(tmp_path):
    payload = load("byzantine").main(["--quick"], output=tmp_path)
    assert set(payload["summary"]) == {"mean", "median", "trimmed_mean", "geometric_median", "norm_clipped_mean"}
    assert (tmp_path / "byzantine.png").stat().st_size > 0
    assert "attacked" in (tmp_path / "byzantine.md").read_text()


def test_profile_round_quick(tmp_path):
    out = load("profile_round").main(["--quick"], output=tmp_path)
    assert out["rounds"] >= 1 and out["total"] > 0
    assert "cProfile" in (tmp_path / "profile_round.txt").read_text()
    assert "| phase | seconds | share |" in (tmp_path / "profile_round.md").read_text()

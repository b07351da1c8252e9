"""The benchmark harness (benchmarks/harness): cache keys, hits and misses, resumption after a kill, parallel runs, the
writer, the statistics, and the ported studies reproducing their committed results from the committed cache."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy_study  # noqa: E402
from harness import Report, Run, Settings, Study, grid, interval_estimate, seed_spread  # noqa: E402
from harness.cache import Cache  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.keys import config_key  # noqa: E402
from harness.runner import collect, run_missing  # noqa: E402

#: The studies on the harness whose committed results must come back byte for byte from benchmarks/cache/<name>.
PORTED = [
    "aggregator_breakdown",
    "byzantine",
    "collaboration",
    "comparison",
    "heterogeneity",
    "identity_parity",
    "lqr_bias",
    "lqr_speedup",
    "noise_correction",
    "tabular_bias",
    "tabular_communication",
    "tabular_heterogeneity",
    "tabular_speedup",
    "tabular_svrpgm",
    "tabular_transition",
    "tabular_truncation",
    "zoo_optimize",
]


@pytest.fixture
def markers(tmp_path, monkeypatch):
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("TOY_MARKERS", str(folder))
    return folder


def toy(tmp_path, *args):
    # one worker unless the test asks for more (spawning workers takes seconds on a loaded machine)
    return main(
        toy_study.STUDY, ["--out-dir", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--workers", "1", *args]
    )


def test_key_is_the_hash_of_function_and_configuration():
    run = Run(toy_study.square, {"x": 2, "seed": 0, "sleep": 0.0})
    assert run.key == Run(toy_study.square, {"sleep": 0.0, "seed": 0, "x": 2}).key  # order does not matter
    assert run.key == Run(toy_study.square, {"x": np.int64(2), "seed": 0, "sleep": 0.0}).key  # NumPy values are values
    assert run.key != Run(toy_study.square, {"x": 2, "seed": 1, "sleep": 0.0}).key
    assert run.key != Run(seed_spread, {"x": 2, "seed": 0, "sleep": 0.0}).key  # another function
    assert run.key == config_key("square", {"x": 2, "seed": 0, "sleep": 0.0}) and len(run.key) == 12
    assert run == Run(toy_study.square, dict(run.config), "other label") and len({run, Run(toy_study.square, run.config)}) == 1
    runs = grid(toy_study.square, "x{x}_s{seed}", {"sleep": 0.0}, x=[1, 2], seed=[0, 1])
    assert [r.label for r in runs] == ["x1_s0", "x1_s1", "x2_s0", "x2_s1"]


def test_cache_hit_and_miss(tmp_path, markers):
    first = toy(tmp_path)
    assert len(list(markers.iterdir())) == 9
    entry = json.loads(next((tmp_path / "cache").glob("x2_s1_*.json")).read_text())
    assert entry["result"] == {"value": 5, "array": [0, 2, 4]} and entry["config"] == {"sleep": 0.0, "x": 2, "seed": 1}
    assert entry["library_version"].startswith(__import__("sb3_fedpg").__version__) and entry["seconds"] >= 0
    assert toy(tmp_path) == first and len(list(markers.iterdir())) == 9  # all hits: nothing computed
    toy(tmp_path, "--set", "xs=[1, 2, 3, 4]")  # only the new x is computed
    assert len(list(markers.iterdir())) == 12
    sweep = json.loads((tmp_path / "cache" / "_sweep.json").read_text())
    assert sweep["out_dir"] == str(tmp_path / "out") and sweep["seconds"] > 0
    assert sweep["machine"]["cpus"] == os.cpu_count() and sweep["machine"]["python"] == sys.version.split()[0]


def test_every_setting_is_a_flag(tmp_path, markers):
    # --xs 1 2 4 is --set xs=[1,2,4]; --seeds 1 is --set seeds=1; --output is --out-dir (the scripts' older name)
    folders = ["--output", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--workers", "1"]
    data = main(toy_study.STUDY, [*folders, "--xs", "1", "2", "4", "--seeds", "1"])
    assert data["settings"]["xs"] == [1, 2, 4] and data["settings"]["seeds"] == 1 and data["mean"] == [1.0, 4.0, 16.0]
    assert sorted(path.name.split("_")[0] for path in markers.iterdir()) == ["1", "2", "4"]
    assert (tmp_path / "out" / "toy.json").is_file()
    with pytest.raises(SystemExit):
        toy(tmp_path, "--sleep")  # a scalar setting takes one value


def test_report_only_uses_the_cache(tmp_path, markers):
    with pytest.raises(SystemExit, match="9 runs are not in"):
        toy(tmp_path, "--report")
    assert not list(markers.iterdir())
    with pytest.raises(SystemExit, match="no setting 'sedes'"):
        toy(tmp_path, "--set", "sedes=2")


def test_resumes_after_a_kill(tmp_path, markers):
    # a sweep of 8 runs of 0.4 s, killed (SIGKILL) after at least 3 have completed: the next invocation computes only
    # the others, and every file the killed sweep left is complete
    cache = tmp_path / "cache"
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import toy_study; "
        f"toy_study.STUDY.main(['--cache', {str(cache)!r}, '--out-dir', {str(tmp_path / 'out')!r}, "
        "'--set', 'xs=[1, 2, 3, 4]', '--set', 'seeds=2', '--set', 'sleep=0.4', '--workers', '1'])"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while len(list(cache.glob("x*.json"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(cache.glob("x*.json")))
    assert 3 <= done < 8, done
    for path in cache.glob("x*.json"):
        assert json.loads(path.read_text())["result"]["value"] >= 1
    before = len(list(markers.iterdir()))
    toy(tmp_path, "--set", "xs=[1, 2, 3, 4]", "--set", "seeds=2", "--set", "sleep=0.4")
    assert len(list(markers.iterdir())) - before == 8 - done
    assert len(list(cache.glob("x*.json"))) == 8 and not list(cache.glob(".*tmp*"))


def test_parallel_equals_serial(tmp_path, markers):
    serial = toy(tmp_path, "--cache", str(tmp_path / "serial"), "--workers", "1")
    serial_json = (tmp_path / "out" / "toy.json").read_text()
    parallel = toy(tmp_path, "--cache", str(tmp_path / "parallel"), "--workers", "2")
    assert parallel == serial and (tmp_path / "out" / "toy.json").read_text() == serial_json
    for path in (tmp_path / "serial").glob("x*.json"):
        ours, theirs = json.loads(path.read_text()), json.loads((tmp_path / "parallel" / path.name).read_text())
        assert ours["result"] == theirs["result"] and ours["config"] == theirs["config"]


def test_a_failing_run_keeps_the_completed_ones(tmp_path):
    cache = Cache(tmp_path / "cache")
    runs = [Run(toy_study.square, {"x": x, "seed": 0, "sleep": 0.0}, f"x{x}") for x in (1, -1, 2)]
    with pytest.raises(ValueError, match="negative"):
        run_missing(runs, cache, workers=1)
    assert cache.has(runs[0]) and not cache.has(runs[1])
    results = collect(runs, cache)
    assert results[runs[0]]["value"] == 1 and results.missing == runs[1:]
    with pytest.raises(KeyError, match="x-1"):
        results[runs[1]]


def test_writer_outputs(tmp_path, markers):
    data = toy(tmp_path, "--quick")
    out = tmp_path / "out"
    text = (out / "toy.json").read_text()
    assert not text.endswith("\n") and '\n "mean"' in text  # indent=1, as the tabular studies always wrote
    written = json.loads(text)
    assert written == json.loads(json.dumps(data)) and written["nan"] is None  # strict JSON: NaN is null
    assert written["settings"] == {"quick": True, "out_dir": str(out), "xs": [1, 2, 3], "seeds": 2, "sleep": 0.0}
    assert written["mean"] == [1.5, 4.5, 9.5] and written["std"] == [0.5, 0.5, 0.5]
    assert (
        out / "toy.md"
    ).read_text() == "| x | mean | std |\n|---|---:|---:|\n| 1 | 1.5 | 0.5 |\n| 2 | 4.5 | 0.5 |\n| 3 | 9.5 | 0.5 |\n"
    assert (out / "toy.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_made_from_other_runs_results(tmp_path, markers):
    # Study.then: the second stage's runs depend on the first stage's results, computed after them; --report needs both
    def then(s, results):
        return [
            Run(toy_study.square, {"x": results(toy_study.square, x=x, seed=0, sleep=0.0)["value"], "seed": 0, "sleep": 0.0})
            for x in s.xs
        ]

    def report(ctx):
        return Report(
            {"squares": [ctx.results(toy_study.square, x=x * x, seed=0, sleep=0.0)["value"] for x in ctx.settings.xs]}
        )

    study = Study(
        "staged",
        "Squares of squares.",
        {"xs": [2, 3]},
        lambda s: grid(toy_study.square, "x{x}", {"seed": 0, "sleep": 0.0}, x=s.xs),
        report,
        then=then,
    )
    args = ["--out-dir", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--workers", "1"]
    with pytest.raises(SystemExit, match="2 of 2 runs are not in"):
        main(study, [*args, "--report"])
    assert main(study, args) == {"squares": [16, 81]} and len(list(markers.iterdir())) == 4
    assert main(study, [*args, "--report", "--output", str(tmp_path / "again")]) == {"squares": [16, 81]}
    assert (tmp_path / "again" / "staged.json").is_file() and len(list(markers.iterdir())) == 4


def test_interval_estimate_is_a_stratified_bootstrap():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 3)) + np.arange(3)  # 6 runs on 3 tasks of different levels
    estimate = interval_estimate(scores, "mean", n_resamples=4000)
    # by hand: each task's runs resampled on their own, the mean of all of them
    picks = rng.integers(0, 6, size=(4000, 6, 3))
    boot = np.take_along_axis(np.broadcast_to(scores, picks.shape), picks, axis=1).mean(axis=(1, 2))
    low, high = np.percentile(boot, [2.5, 97.5])
    assert estimate.point == pytest.approx(scores.mean())
    assert estimate.low == pytest.approx(low, abs=0.05) and estimate.high == pytest.approx(high, abs=0.05)
    iqm = interval_estimate(scores, "iqm")
    assert iqm.low <= iqm.point <= iqm.high
    single = interval_estimate([[1.0, 2.0]])
    assert single.point == 1.5 and np.isnan(single.low) and np.isnan(single.high)
    mean, std = seed_spread([[1.0, 3.0], [2.0, 2.0]])
    assert mean.tolist() == [2.0, 2.0] and std.tolist() == [1.0, 0.0]


def test_settings_read_as_attributes():
    s = Settings(seeds=3)
    assert s.seeds == s["seeds"] == 3
    with pytest.raises(AttributeError, match="no setting 'rounds'"):
        _ = s.rounds


@pytest.mark.parametrize("name", PORTED)
def test_ported_study_reproduces_its_committed_results_from_the_cache(name, tmp_path, monkeypatch):
    # nothing is computed (--report): the committed cache holds every run, and the report is the committed one
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = importlib.import_module(name)
    module.main(["--report", "--out-dir", str(tmp_path)])
    for suffix in ("json", "md"):
        committed = ROOT / "benchmarks" / "results" / f"{name}.{suffix}"
        if committed.exists():
            assert (tmp_path / f"{name}.{suffix}").read_text() == committed.read_text(), f"{name}.{suffix}"

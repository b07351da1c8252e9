"""A tiny study for the harness's tests: each run squares a number (and records that it ran, in ``$TOY_MARKERS``)."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import numpy as np
from harness import Context, Report, Run, Settings, Study, grid, interval_estimate, seed_spread, table


def square(x: int, seed: int, sleep: float) -> dict:
    """:return: ``x² + seed`` and a NumPy array (the cache stores plain JSON); leaves a marker file per call"""
    markers = os.environ.get("TOY_MARKERS")
    if markers:
        (Path(markers) / f"{x}_{seed}_{uuid.uuid4().hex}").touch()
    time.sleep(sleep)
    if x < 0:
        raise ValueError("negative x")
    return {"value": x * x + seed, "array": np.arange(3) * x}


def runs(s: Settings) -> list[Run]:
    return grid(square, "x{x}_s{seed}", {"sleep": s.sleep}, x=s.xs, seed=range(s.seeds))


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s = ctx.settings
    values = np.array([[ctx.results(square, x=x, seed=i, sleep=s.sleep)["value"] for i in range(s.seeds)] for x in s.xs])
    mean, std = seed_spread(values)
    interval = interval_estimate(values.T, "mean", n_resamples=200)
    fig, ax = plt.subplots()
    ax.plot(s.xs, mean)
    rows = [["x", "mean", "std"], *([x, f"{m:.1f}", f"{d:.1f}"] for x, m, d in zip(s.xs, mean, std, strict=True))]
    data = {"settings": s, "mean": mean, "std": std, "interval": [interval.low, interval.high], "nan": float("nan")}
    return Report(data, fig, "\n".join(table(rows, "lrr")) + "\n")


STUDY = Study("toy", __doc__, {"xs": [1, 2, 3], "seeds": 3, "sleep": 0.0}, runs, report, quick={"seeds": 2})

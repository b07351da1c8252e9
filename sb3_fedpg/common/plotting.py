"""
Learning curves over seeds: read a run's curve, put several runs on one step grid, draw the mean with a band.

One module for every figure of the library: :mod:`sb3_fedpg.zoo.plot` (curves from run folders) and
:mod:`sb3_fedpg.demo` (curves it tracks in memory) both aggregate with :func:`aggregate_curves` and draw with
:func:`plot_band`, so a figure drawn from zoo runs and the demo's own figure show the same statistics. The benchmark
scripts (``benchmarks/*.py``) draw their mean ± spread bands with it too: learning curves on a given grid
(``aggregate_curves(..., grid=...)``), and sweeps whose runs share their x values (:func:`aggregate_values`: the median
with the min–max range, NaN-skipping, a log y axis in :func:`draw_panel`).

A run's curve (:class:`RunCurve`) comes from ``evaluations.npz`` (:func:`read_evaluations`: the policy evaluated on
every agent's task, each under its own reward) or from ``progress.csv`` (:func:`read_progress`: the training
episodes' returns, ``rollout/ep_rew_mean`` and each agent's ``fed/agent_<i>/ep_rew_mean``).
"""

from __future__ import annotations

import csv
import math
import os
import pathlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Spread bands :func:`aggregate_curves` knows: mean ± std over runs, min–max over runs, none.
BANDS = ("std", "minmax", "none")
#: Lines :func:`aggregate_values` can draw: the mean or the median over runs.
CENTERS = ("mean", "median")

#: ``progress.csv`` columns of :func:`read_progress`.
PROGRESS_STEPS, PROGRESS_TIME, PROGRESS_RETURN = "time/total_timesteps", "time/time_elapsed", "rollout/ep_rew_mean"
_AGENT_COLUMN = re.compile(r"^fed/agent_(\d+)/ep_rew_mean$")


@dataclass
class RunCurve:
    """
    One run's learning curve.

    :param x: the x values (env steps, or seconds), increasing
    :param y: the curve (``J̄``: the mean over agents of each agent's return; or the training return)
    :param per_agent: each agent's curve, shape ``(n_agents, len(x))`` (``None``: not available)
    :param path: where it was read from
    """

    x: np.ndarray
    y: np.ndarray
    per_agent: np.ndarray | None = None
    path: str | None = None


@dataclass
class AggregatedCurve:
    """
    Several runs' curves on one grid.

    :param x: the common grid
    :param runs: every run's curve on the grid (smoothed first), shape ``(n_runs, len(x))``
    :param mean: their mean over runs
    :param std: their standard deviation over runs (``ddof=0`` unless :func:`aggregate_values` was told otherwise)
    :param low: lower edge of the band (``mean - std``, the minimum, or the line for no band)
    :param high: upper edge of the band
    :param band: which band (one of :data:`BANDS`)
    :param line: the line drawn: ``mean``, or the median over runs
    :param center: which line (one of :data:`CENTERS`)
    """

    x: np.ndarray
    runs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray
    band: str
    line: np.ndarray
    center: str = "mean"

    @property
    def n_runs(self) -> int:
        """Number of runs aggregated."""
        return len(self.runs)


def smooth(y: np.ndarray, window: int = 1) -> np.ndarray:
    """
    Trailing moving average (each point the mean of itself and up to ``window - 1`` points before it; the first
    points average what there is, so the curve keeps its length).

    :param y: a curve
    :param window: points per average (1: unchanged)
    :return: the smoothed curve
    """
    y = np.asarray(y, dtype=np.float64)
    if window < 1:
        raise ValueError(f"the smoothing window must be >= 1, got {window}.")
    if window == 1 or len(y) == 0:
        return y
    cumulative = np.concatenate([[0.0], np.cumsum(y)])
    index = np.arange(1, len(y) + 1)
    start = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[start]) / (index - start)


def common_grid(xs: Sequence[np.ndarray]) -> np.ndarray:
    """
    :param xs: the runs' x values (each increasing)
    :return: the runs' own x values if they all have the same; else every x value of any run inside the range all
        runs cover (from the largest first value to the smallest last value)
    """
    xs = [np.asarray(x, dtype=np.float64) for x in xs]
    if not xs or any(len(x) == 0 for x in xs):
        raise ValueError("every run needs at least one point to be aggregated.")
    if all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs):
        return xs[0]
    start, stop = max(x[0] for x in xs), min(x[-1] for x in xs)
    if start > stop:
        raise ValueError(f"the runs' x ranges do not overlap (they start at {start:g} at the latest, end at {stop:g}).")
    grid = np.unique(np.concatenate(xs))
    return grid[(grid >= start) & (grid <= stop)]


def aggregate_values(
    x: ArrayLike,
    values: ArrayLike,
    band: str = "std",
    center: str = "mean",
    ddof: int = 0,
    skip_nan: bool = False,
) -> AggregatedCurve:
    """
    Line and spread over runs whose curves already share their x values (a sweep's grid, evaluations at the same
    steps): mean (or median), standard deviation and band point by point over runs, nothing interpolated.

    :param x: the x values
    :param values: every run's curve, shape ``(n_runs, len(x))``
    :param band: ``"std"`` (mean ± std), ``"minmax"`` (min to max over runs) or ``"none"``
    :param center: the line: ``"mean"`` or ``"median"`` over runs
    :param ddof: delta degrees of freedom of the standard deviation (0 with fewer than ``ddof + 1`` runs)
    :param skip_nan: statistics over the runs that are not NaN at each point (``np.nanmean`` ...: e.g. runs a guard
        stopped); else a NaN in any run makes the statistics NaN there
    :return: the aggregated curve
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}: use one of {BANDS}.")
    if center not in CENTERS:
        raise ValueError(f"unknown center {center!r}: use one of {CENTERS}.")
    x, values = np.asarray(x, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(x) or len(values) == 0:
        raise ValueError(f"values of shape {values.shape}: need (n_runs >= 1, {len(x)}) for {len(x)} x values.")
    if skip_nan:
        mean_, std_, median, min_, max_ = np.nanmean, np.nanstd, np.nanmedian, np.nanmin, np.nanmax
    else:
        mean_, std_, median, min_, max_ = np.mean, np.std, np.median, np.min, np.max
    with warnings.catch_warnings():  # skip_nan: a point where every run is NaN stays NaN, without a warning
        if skip_nan:
            warnings.simplefilter("ignore", RuntimeWarning)
        mean = mean_(values, axis=0)
        std = std_(values, axis=0, ddof=ddof) if len(values) > ddof else np.zeros(len(x))
        line = mean if center == "mean" else median(values, axis=0)
        if band == "std":
            low, high = mean - std, mean + std
        elif band == "minmax":
            low, high = min_(values, axis=0), max_(values, axis=0)
        else:
            low, high = line, line
    return AggregatedCurve(x, values, mean, std, low, high, band, line, center)


def aggregate_curves(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str = "std", window: int = 1, grid: ArrayLike | None = None
) -> AggregatedCurve:
    """
    Mean and spread over runs of their curves: each run is smoothed (:func:`smooth`), then put on ``grid`` (default:
    the :func:`common_grid`) by linear interpolation (``np.interp``, constant beyond a run's ends; nothing is
    interpolated for a run whose x values are the grid), then mean, standard deviation and band are taken point by
    point over runs (:func:`aggregate_values`).

    :param curves: each run's ``(x, y)``
    :param band: ``"std"`` (mean ± std), ``"minmax"`` (min to max over runs) or ``"none"``
    :param window: smoothing window (points)
    :param grid: the x values to aggregate on (e.g. the first run's); ``None``: the :func:`common_grid`
    :return: the aggregated curve
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}: use one of {BANDS}.")
    if not curves:
        raise ValueError("no curves to aggregate.")
    grid = common_grid([x for x, _ in curves]) if grid is None else np.asarray(grid, dtype=np.float64)
    runs = []
    for x, y in curves:
        x, y = np.asarray(x, dtype=np.float64), smooth(np.asarray(y), window)
        if len(x) != len(y):
            raise ValueError(f"a curve has {len(x)} x values but {len(y)} y values.")
        same = len(x) == len(grid) and np.array_equal(x, grid)
        runs.append(y if same else np.interp(grid, x, y))
    return aggregate_values(grid, np.array(runs), band)


def plot_band(
    ax: Axes,
    curve: AggregatedCurve,
    label: str | None = None,
    color: Any = None,
    linestyle: str = "-",
    alpha: float = 0.15,
    marker: str | None = None,
) -> Any:
    """
    Draw the line (mean or median) and its band.

    :param ax: matplotlib axes
    :param curve: from :func:`aggregate_curves` or :func:`aggregate_values`
    :param label: legend label
    :param color: line and band colour, any matplotlib colour (``None``: the axes' next colour)
    :param linestyle: matplotlib line style
    :param alpha: band opacity
    :param marker: matplotlib marker at every point (``None``: none)
    :return: the line
    """
    (line,) = ax.plot(curve.x, curve.line, color=color, linestyle=linestyle, marker=marker, label=label)
    if curve.band != "none":
        ax.fill_between(curve.x, curve.low, curve.high, color=line.get_color(), alpha=alpha)
    return line


def format_steps_axis(ax: Axes, xlabel: str = "environment steps, all agents together") -> None:
    """
    Label the x axis as env steps, with ticks in thousands (``40k``, ``2.5k``) or millions (``1.5M``).

    :param ax: matplotlib axes
    :param xlabel: the label
    """
    import matplotlib.ticker

    def thousands(value: float, _: Any) -> str:
        if abs(value) >= 1e6:
            return f"{value / 1e6:g}M"
        return f"{value / 1000:g}k"

    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(thousands))
    ax.set_xlabel(xlabel)


@dataclass
class Series:
    """
    One line of a figure: a label, its aggregated curve and its style.

    :param label: legend label
    :param curve: from :func:`aggregate_curves`
    :param color: line and band colour, any matplotlib colour (``None``: the axes' next colour)
    :param linestyle: matplotlib line style
    :param marker: matplotlib marker at every point (``None``: none)
    """

    label: str
    curve: AggregatedCurve
    color: Any = None
    linestyle: str = "-"
    marker: str | None = None


#: y label of a ``J̄`` curve (the demo's and ``zoo.plot --source eval``'s).
J_BAR_LABEL = "J̄ = mean of the agents' returns"


def draw_panel(
    ax: Axes,
    series: Sequence[Series],
    title: str | None = None,
    ylabel: str = J_BAR_LABEL,
    xlabel: str = "environment steps, all agents together",
    steps: bool = True,
    fontsize: float = 10,
    yscale: str = "linear",
    legend: str | None = "best",
) -> None:
    """
    One panel of learning curves, in the demo's style: each series' line and band, a legend and a light grid.

    :param ax: matplotlib axes
    :param series: the lines
    :param title: panel title
    :param ylabel: y label
    :param xlabel: x label
    :param steps: the x axis is env steps (ticks in thousands: :func:`format_steps_axis`)
    :param fontsize: title font size (the legend's is one less)
    :param yscale: ``"linear"`` or ``"log"`` (then the grid has minor lines too)
    :param legend: the legend's location (``None``: no legend, e.g. for one legend for the whole figure)
    """
    for item in series:
        plot_band(ax, item.curve, item.label, item.color, item.linestyle, marker=item.marker)
    if steps:
        format_steps_axis(ax, xlabel)
    else:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale(yscale)
    if title:
        ax.set_title(title, fontsize=fontsize)
    if legend is not None:
        ax.legend(loc=cast(Any, legend), fontsize=fontsize - 1)  # any location matplotlib knows
    ax.grid(alpha=0.3, which="both" if yscale == "log" else "major")


def read_evaluations(path: str | os.PathLike) -> RunCurve:
    """
    A run's evaluation curve from its ``evaluations.npz`` (:class:`~sb3_fedpg.common.callbacks.FederatedEvalCallback`,
    or SB3's ``EvalCallback``).

    With ``results_per_agent``: each agent's curve is its mean return at every evaluation, and ``y`` is ``J̄``, their
    mean over agents (the numbers :func:`~sb3_fedpg.common.evaluation.evaluate_agents` and the demo give). An SB3
    file (``results`` only) gives ``y`` as the mean over its episodes and no per-agent curves.

    :param path: the file, or the run folder holding it
    :return: the curve, x in env steps
    """
    from sb3_fedpg.common.evaluation import agent_means

    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "evaluations.npz"
    with np.load(path) as data:
        x = np.asarray(data["timesteps"], dtype=np.float64)
        if "results_per_agent" in data:
            returns = np.asarray(data["results_per_agent"], dtype=np.float64)
            n = int(data["n_episodes_per_env"]) if "n_episodes_per_env" in data else 1
            means = [agent_means(r, n) for r in returns]  # each evaluation's per-agent returns
            # J̄ as the demo computes it: the mean of each evaluation's per-agent vector (same operations, same bits).
            y = np.array([m.mean() for m in means])
            return RunCurve(x, y, np.array(means).reshape(len(x), -1).T, os.fspath(path))
        results = np.asarray(data["results"], dtype=np.float64).reshape(len(x), -1)
        return RunCurve(x, results.mean(axis=1), None, os.fspath(path))


def read_progress(path: str | os.PathLike, x_axis: str = "steps") -> RunCurve:
    """
    A run's training curve from its ``progress.csv``: ``rollout/ep_rew_mean`` (the mean return of the training
    episodes in SB3's window, all agents' pooled) and each agent's ``fed/agent_<i>/ep_rew_mean``; rows before any
    episode ended (empty return) are skipped.

    :param path: the file, or the run folder holding it
    :param x_axis: ``"steps"`` (``time/total_timesteps``) or ``"time"`` (``time/time_elapsed``, seconds)
    :return: the curve (``per_agent`` ``None`` when the file has no ``fed/agent_<i>/`` columns: A2C, PPO)
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "progress.csv"
    column = {"steps": PROGRESS_STEPS, "time": PROGRESS_TIME}.get(x_axis)
    if column is None:
        raise ValueError(f"unknown x axis {x_axis!r} for progress.csv: use 'steps' or 'time'.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0]) if rows else []
    agents = sorted((int(m[1]), name) for name in header if (m := _AGENT_COLUMN.match(name)))

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    x = np.array([number(row.get(column)) for row in rows])
    y = np.array([number(row.get(PROGRESS_RETURN)) for row in rows])
    keep = np.isfinite(x) & np.isfinite(y)
    per_agent = None
    if agents:
        table = np.array([[number(row.get(name)) for row in rows] for _, name in agents])
        keep &= np.isfinite(table).all(axis=0)
        per_agent = table[:, keep]
    return RunCurve(x[keep], y[keep], per_agent, os.fspath(path))


def find_runs(log_folder: str | os.PathLike, algo: str, env_id: str) -> list[pathlib.Path]:
    """
    The run folders of one algorithm on one env, as :mod:`sb3_fedpg.zoo.train` makes them: ``<log folder>/<algo>/<env
    name>_<run id>`` (each a seed), in run id order.

    :param log_folder: the trainer's ``-f``
    :param algo: the algorithm name
    :param env_id: the env id
    :return: the folders
    """
    name = env_id.replace("/", "-").replace(":", "-")
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)$")
    folder = pathlib.Path(log_folder) / algo
    found = [(int(m[1]), p) for p in folder.glob(f"{name}_*") if (m := pattern.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


#: Curve sources of :func:`read_run`: the evaluations, the training log, or the evaluations where every run has them.
SOURCES = ("auto", "eval", "progress")


def read_run(run: str | os.PathLike, source: str = "eval", x_axis: str = "steps") -> RunCurve:
    """
    :param run: a run folder
    :param source: ``"eval"`` (``evaluations.npz``: :func:`read_evaluations`) or ``"progress"`` (``progress.csv``:
        :func:`read_progress`)
    :param x_axis: ``"steps"``, or ``"time"`` (``progress`` only)
    :return: the run's curve
    """
    run = pathlib.Path(run)
    if source == "eval":
        if x_axis != "steps":
            raise ValueError(f"evaluations.npz has env steps only: x axis {x_axis!r} needs --source progress.")
        if not (run / "evaluations.npz").is_file():
            raise FileNotFoundError(
                f"{run} has no evaluations.npz: train with --eval-freq to write one, or plot --source progress."
            )
        return read_evaluations(run)
    if source == "progress":
        return read_progress(run, x_axis)
    raise ValueError(f"unknown source {source!r}: use 'eval' or 'progress'.")


def pick_source(runs: Sequence[str | os.PathLike], source: str = "auto") -> str:
    """
    :param runs: run folders
    :param source: one of :data:`SOURCES`
    :return: ``source``, or for ``"auto"``: ``"eval"`` if every run has an ``evaluations.npz``, else ``"progress"``
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: use one of {SOURCES}.")
    if source != "auto":
        return source
    return "eval" if runs and all((pathlib.Path(r) / "evaluations.npz").is_file() for r in runs) else "progress"


def aggregate_runs(
    runs: Sequence[str | os.PathLike],
    source: str = "eval",
    x_axis: str = "steps",
    window: int = 1,
    band: str = "std",
    max_x: float | None = None,
    per_agent: bool = False,
) -> tuple[AggregatedCurve, list[AggregatedCurve] | None]:
    """
    Read runs (seeds of one setup) and aggregate their curves: :func:`read_run` then :func:`aggregate_curves`.

    :param runs: run folders
    :param source: ``"eval"`` or ``"progress"``
    :param x_axis: ``"steps"`` or ``"time"``
    :param window: smoothing window (points)
    :param band: one of :data:`BANDS`
    :param max_x: drop the points beyond this x (``None``: keep all)
    :param per_agent: aggregate every agent's curve as well
    :return: the aggregated mean curve, and each agent's aggregated curve (``None`` unless ``per_agent``)
    """
    if not runs:
        raise ValueError("no runs to aggregate.")
    curves = [read_run(run, source, x_axis) for run in runs]
    for curve, run in zip(curves, runs, strict=True):
        if len(curve.x) == 0:
            raise ValueError(f"{run}: no point to plot in its {source} curve.")
    keeps = [np.ones(len(c.x), dtype=bool) if max_x is None else c.x <= max_x for c in curves]
    total = aggregate_curves([(c.x[k], c.y[k]) for c, k in zip(curves, keeps, strict=True)], band, window)
    if not per_agent:
        return total, None
    missing = [c.path for c in curves if c.per_agent is None]
    if missing:
        raise ValueError(
            f"no per-agent curves in {', '.join(map(str, missing))}: progress.csv of A2C/PPO has none; "
            "train with --eval-freq and plot --source eval."
        )
    n_agents = {len(c.per_agent) for c in curves if c.per_agent is not None}
    if len(n_agents) != 1:
        raise ValueError(f"the runs have different numbers of agents ({sorted(n_agents)}): they cannot be aggregated.")
    agents = [
        aggregate_curves(
            [(c.x[k], c.per_agent[i][k]) for c, k in zip(curves, keeps, strict=True) if c.per_agent is not None], band, window
        )
        for i in range(n_agents.pop())
    ]
    return total, agents

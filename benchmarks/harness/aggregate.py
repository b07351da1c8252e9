"""
Seed spread and interval estimates of a study's scores.

:func:`seed_spread` is the mean and standard deviation over seeds that the tables report. :func:`interval_estimate`
is rliable's (Agarwal et al., NeurIPS 2021, https://arxiv.org/abs/2108.13264) interval estimate: a percentile
confidence interval from a *stratified* bootstrap (the runs of each task resampled on their own) of the mean, the
median or the interquartile mean (IQM, the mean of the middle 50 % of all runs). It is computed with
``scipy.stats.bootstrap``, each task one independent sample, rather than with ``rliable.library.get_interval_estimates``:
rliable 1.2.0 imports ``arch`` (< 8), whose 7.x releases fail to import under pandas 3, and it would add pandas, arch,
seaborn and statsmodels to the benchmarks for one function. The estimator is the same (``tests/benchmarks`` checks it
against a bootstrap written out by hand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

#: The statistics :func:`interval_estimate` knows (rliable's ``aggregate_mean``, ``aggregate_median``, ``aggregate_iqm``).
STATISTICS: dict[str, Callable[..., Any]] = {
    "mean": lambda x, axis: np.mean(x, axis=axis),
    "median": lambda x, axis: np.median(x, axis=axis),
    "iqm": lambda x, axis: stats.trim_mean(x, 0.25, axis=axis),
}


@dataclass(frozen=True)
class Interval:
    """
    A point estimate and its confidence interval.

    :param point: the statistic of all runs
    :param low: the interval's lower end (``NaN`` with fewer than two runs per task)
    :param high: the interval's upper end
    """

    point: float
    low: float
    high: float


def positive(values: Sequence[float] | np.ndarray, floor: float = 1e-16) -> np.ndarray:
    """
    Gaps clipped for log axes (exact gaps can dip to ``-1e-15`` by round-off).

    :param values: gaps
    :param floor: the smallest value plotted
    :return: a clipped copy
    """
    return np.maximum(np.asarray(values, dtype=np.float64), floor)


def seed_spread(values: Sequence[float] | np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """
    The mean and the (population, ``ddof = 0``) standard deviation over seeds.

    :param values: scores, seeds along ``axis``
    :param axis: the seeds' axis
    :return: the mean and the standard deviation (arrays of the other axes; 0-d for a single row)
    """
    values = np.asarray(values, dtype=np.float64)
    return values.mean(axis=axis), values.std(axis=axis)


def interval_estimate(
    scores: Sequence[Sequence[float]] | np.ndarray,
    statistic: str = "iqm",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """
    rliable's stratified-bootstrap interval estimate of an aggregate score.

    :param scores: ``(runs, tasks)`` scores (one column for a single task)
    :param statistic: ``"mean"``, ``"median"`` or ``"iqm"`` of all runs of all tasks
    :param confidence: the interval's confidence level
    :param n_resamples: bootstrap resamples
    :param seed: the resampling's seed (the interval is reproducible)
    :return: the statistic and its percentile interval
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    aggregate = STATISTICS[statistic]
    point = float(aggregate(scores.reshape(-1), axis=-1))
    if scores.shape[0] < 2:
        return Interval(point, float("nan"), float("nan"))

    def pooled(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
        return aggregate(np.concatenate(tasks, axis=axis), axis=axis)

    result = stats.bootstrap(
        tuple(scores.T),
        pooled,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return Interval(point, float(result.confidence_interval.low), float(result.confidence_interval.high))

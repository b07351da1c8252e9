"""
Server-side reductions over agents: the mean and Byzantine-robust alternatives.

Each aggregator maps stacked per-agent vectors ``(n, p)`` (NumPy or torch) to one
vector ``(p,)`` and is a small picklable object, so it is saved with a model and shared
by the in-process algorithm and the Flower server. They are applied to both the anchor
gradients (phase 1) and the parameter changes (phase 3) of a round.

**Breakdown points** (the number ``f`` of arbitrary — colluding, arbitrarily large —
agents out of ``n`` under which the error stays bounded by a multiple of the honest
agents' spread, whatever the attackers send; measured by ``benchmarks/aggregator_breakdown.py``
and asserted in ``tests/common/test_aggregators.py``):

============================  ====================================================
rule                          tolerated attackers ``f`` (``n`` agents)
============================  ====================================================
``mean``                      0
``median``                    ``⌊(n − 1) / 2⌋``
``trimmed_mean``              ``k = max(1, ⌊trim·n⌋)`` for ``n ≥ 3`` (``trim > 0``); 0 for ``n ≤ 2``
``geometric_median``          ``⌊(n − 1) / 2⌋``
``norm_clipped_mean``         ``⌊(n − 1) / 2⌋`` (each attacker still moves the result by
                              at most ``radius / n``: bounded, not removed)
============================  ====================================================

With two agents or fewer no rule can tell an honest agent from a bad one: every rule
returns the mean there.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch as th

from sb3_fedpg.common.fedmath import mean_aggregate, row_norms


def coordinate_median(stacked: Any) -> Any:
    """
    Coordinate-wise median, the mean of the two middle values for an even count (as ``np.median``).

    Sorts instead of ``th.quantile``, which refuses inputs of more than 2**24 elements.

    :param stacked: per-agent vectors ``(n, p)``
    :return: the median ``(p,)``
    """
    if not isinstance(stacked, th.Tensor):
        return np.median(stacked, axis=0)
    n = stacked.shape[0]
    ordered = th.sort(stacked, dim=0).values
    if n % 2 == 1:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _scalar_median(values: Any) -> float:
    if isinstance(values, th.Tensor):
        return float(coordinate_median(values[:, None])[0])
    return float(np.median(values))


def _norm(vector: Any) -> float:
    if isinstance(vector, th.Tensor):
        return float(th.linalg.vector_norm(vector))
    return float(np.linalg.norm(vector))


def _finfo_eps(stacked: Any) -> float:
    if isinstance(stacked, th.Tensor):
        return float(th.finfo(stacked.dtype).eps) if stacked.is_floating_point() else float(np.finfo(np.float64).eps)
    dtype = stacked.dtype if np.issubdtype(stacked.dtype, np.floating) else np.float64
    return float(np.finfo(dtype).eps)


def _optimal_data_points(stacked: Any) -> list[int]:
    """
    The indices of the data points that are geometric medians (usually none or one).

    ``x_j`` is optimal iff ``‖Σ_{x_i ≠ x_j} (x_i − x_j) / ‖x_i − x_j‖‖ ≤ #{i : x_i = x_j}`` (the
    subgradient condition); ``n`` passes over ``(n, p)``. Several only when the points are collinear
    and the minimisers form a segment.
    """
    optimal = []
    for j in range(stacked.shape[0]):
        deviations = stacked - stacked[j]
        distances = row_norms(deviations)
        others = distances > 0
        multiplicity = int((~others).sum())
        units = deviations[others] / distances[others][:, None]
        if _norm(units.sum(0)) <= multiplicity * (1 + 1e-12):
            optimal.append(j)
    return optimal


class MeanAggregator:
    """The plain average (the paper's rule; not robust to a single bad agent: breakdown 0)."""

    def __call__(self, stacked: Any) -> Any:
        return mean_aggregate(stacked)

    def __repr__(self) -> str:
        return "MeanAggregator()"


class MedianAggregator:
    """Coordinate-wise median (the mean of the two middle values for an even count); tolerates ``⌊(n − 1)/2⌋`` attackers."""

    def __call__(self, stacked: Any) -> Any:
        return coordinate_median(stacked)

    def __repr__(self) -> str:
        return "MedianAggregator()"


class TrimmedMeanAggregator:
    """
    Coordinate-wise trimmed mean: drop the ``k`` largest and ``k`` smallest values per coordinate, average the rest.

    ``k = max(1, ⌊trim·n⌋)`` when ``trim > 0`` and ``n ≥ 3`` — at least one value is trimmed at
    each end whenever trimming was asked for and something is left to average, so ``[1, 1, 1, 1e6]``
    gives 1, not 250001. With ``n ≤ 2`` nothing can be trimmed and the result is the mean (two
    agents cannot be told apart); ``trim = 0`` is exactly the mean. Tolerates ``k`` attackers.

    :param trim: fraction trimmed at each end, in ``[0, 0.5)``
    """

    def __init__(self, trim: float = 0.2) -> None:
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}.")
        self.trim = trim

    def n_trimmed(self, n: int) -> int:
        """
        :param n: number of agents
        :return: how many values are dropped at each end (the number of attackers tolerated)
        """
        if self.trim == 0 or n <= 2:
            return 0
        return max(1, math.floor(self.trim * n))

    def __call__(self, stacked: Any) -> Any:
        n = stacked.shape[0]
        k = self.n_trimmed(n)
        if k == 0:
            return stacked.mean(0)
        ordered: th.Tensor | np.ndarray
        if isinstance(stacked, th.Tensor):
            ordered = th.sort(stacked, dim=0).values
        else:
            ordered = np.sort(stacked, axis=0)
        return ordered[k : n - k].mean(0)

    def __repr__(self) -> str:
        return f"TrimmedMeanAggregator(trim={self.trim})"


class NormClippedMeanAggregator:
    """
    Centred clipping: the mean of the vectors after pulling each one to within ``radius`` of a robust centre.

    ``x_i ← c + (x_i − c) · min(1, radius / ‖x_i − c‖)``, mean of the results. With the default
    ``center="median"`` the centre ``c`` is the coordinate-wise median and ``radius`` is
    ``radius_factor`` times the median distance to it, so both are set by the honest majority:
    an attacker's vector, however large, moves the result by at most ``radius / n``. The error
    is bounded for up to ``⌊(n − 1)/2⌋`` attackers but grows with their number (clipping bounds
    an attacker, it does not remove it); beyond that the centre itself is theirs.
    ``center="zero"`` clips the vectors' own norms (the classic rule, not translation-equivariant).

    :param max_norm: a fixed clipping radius; ``None`` uses ``radius_factor`` times the round's median distance
    :param radius_factor: the data-driven radius in units of the median distance to the centre (``>= 1``)
    :param center: ``"median"`` (coordinate-wise median) or ``"zero"``
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Saved before centred clipping: the new rule, except that a fixed max_norm kept its meaning (around zero).
        defaults = {"radius_factor": 2.0, "center": "median" if state.get("max_norm") is None else "zero"}
        self.__dict__.update({**defaults, **state})

    def __init__(self, max_norm: float | None = None, radius_factor: float = 2.0, center: str = "median") -> None:
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be > 0 or None, got {max_norm}.")
        if not radius_factor >= 1.0 or not math.isfinite(radius_factor):
            raise ValueError(f"radius_factor must be a finite number >= 1, got {radius_factor}.")
        if center not in ("median", "zero"):
            raise ValueError(f"center must be 'median' or 'zero', got {center!r}.")
        self.max_norm = max_norm
        self.radius_factor = radius_factor
        self.center = center

    def __call__(self, stacked: Any) -> Any:
        is_torch = isinstance(stacked, th.Tensor)
        centre = coordinate_median(stacked) if self.center == "median" else stacked[0] * 0
        deviations = stacked - centre
        distances = row_norms(deviations)
        radius = self.max_norm if self.max_norm is not None else self.radius_factor * _scalar_median(distances)
        if is_torch:
            scale = (radius / distances.clamp(min=1e-300 if distances.dtype == th.float64 else 1e-30)).clamp(max=1.0)
        else:
            scale = np.minimum(radius / np.maximum(distances, 1e-300), 1.0)
        return centre + (deviations * scale[:, None]).mean(0)

    def __repr__(self) -> str:
        return (
            f"NormClippedMeanAggregator(max_norm={self.max_norm}, radius_factor={self.radius_factor}, center={self.center!r})"
        )


class GeometricMedianAggregator:
    """
    Geometric median by Weiszfeld's iterations; tolerates ``⌊(n − 1)/2⌋`` attackers.

    Starts at the coordinate-wise median (at the mean if that is a data point, where Weiszfeld's weights would
    hold it) and stops when an iteration moves the estimate by at most ``tol`` times the data's scale (the
    median distance to it, or the initial one if larger; ``tol`` is raised to ``8 ×`` the dtype's machine epsilon
    for float32), or after ``max_iterations`` (then a ``RuntimeWarning`` says so). After each call
    :attr:`last_iterations` holds the iterations used and :attr:`last_converged` whether the
    tolerance was reached. With ``n ≤ 2`` the result is the mean (every point of the segment is a
    geometric median). The weights are ``1 / max(d_i, eps · s)`` with ``s`` the initial median
    distance, so the rule is scale-equivariant.

    :param max_iterations: most Weiszfeld iterations
    :param tol: relative change that counts as converged
    :param eps: smoothing (relative to the data's spread) that keeps the weights finite at a data point
    :param n_iterations: deprecated name of ``max_iterations``
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Saved before the tolerance-based stop (fixed ``n_iterations``): the new rule with its defaults.
        state = {key: value for key, value in state.items() if key != "n_iterations"}
        defaults = {"max_iterations": 1000, "tol": 1e-10, "eps": 1e-8, "last_iterations": 0, "last_converged": False}
        self.__dict__.update({**defaults, **state})

    def __init__(
        self, max_iterations: int = 1000, tol: float = 1e-10, eps: float = 1e-8, n_iterations: int | None = None
    ) -> None:
        if n_iterations is not None:
            warnings.warn("n_iterations is now max_iterations (Weiszfeld stops at tol)", DeprecationWarning, stacklevel=2)
            if n_iterations < 1:
                raise ValueError(f"n_iterations must be >= 1, got {n_iterations}.")
            max_iterations = n_iterations
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be an integer >= 1, got {max_iterations!r}.")
        if not 0 <= tol < 1:
            raise ValueError(f"tol must be in [0, 1), got {tol}.")
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}.")
        self.max_iterations = max_iterations
        self.tol = tol
        self.eps = eps
        #: Weiszfeld iterations used by the last call
        self.last_iterations = 0
        #: whether the last call reached ``tol`` (``False``: it stopped at ``max_iterations``)
        self.last_converged = False

    def __call__(self, stacked: Any) -> Any:
        n = stacked.shape[0]
        self.last_iterations, self.last_converged = 0, True
        if n <= 2:
            return stacked.mean(0)
        is_torch = isinstance(stacked, th.Tensor)
        estimate = coordinate_median(stacked)
        spread = _scalar_median(row_norms(stacked - estimate))
        floor = self.eps * spread if spread > 0 else 1e-300
        tol = max(self.tol, 8 * _finfo_eps(stacked))
        vertices = _optimal_data_points(stacked)
        if vertices:  # Weiszfeld creeps towards a data point sublinearly: test them first
            # Several only on a segment of minimisers: their mean is one too, and order-independent.
            return stacked[vertices].mean(0)
        self.last_converged = False
        if bool((row_norms(stacked - estimate) <= floor).any()):
            # The coordinate median is a data point, and not an optimal one: Weiszfeld's weights would hold the
            # estimate there (each step a tiny fraction of the spread), so start from the mean instead.
            estimate = stacked.mean(0)
        for iteration in range(1, self.max_iterations + 1):
            distances = row_norms(stacked - estimate)
            weights = 1.0 / (distances.clamp(min=floor) if is_torch else np.maximum(distances, floor))
            new = (stacked * weights[:, None]).sum(0) / weights.sum()
            step = _norm(new - estimate)
            estimate = new
            self.last_iterations = iteration
            # relative to the data's spread only: a test against the estimate's norm is not translation-equivariant
            if step <= tol * max(_scalar_median(distances), spread, floor):
                self.last_converged = True
                break
        if not self.last_converged:
            warnings.warn(
                f"geometric median: Weiszfeld did not reach tol={self.tol} in {self.max_iterations} iterations",
                RuntimeWarning,
                stacklevel=2,
            )
        return estimate

    def __repr__(self) -> str:
        return f"GeometricMedianAggregator(max_iterations={self.max_iterations}, tol={self.tol}, eps={self.eps})"


AGGREGATORS: dict[str, type] = {
    "mean": MeanAggregator,
    "median": MedianAggregator,
    "trimmed_mean": TrimmedMeanAggregator,
    "norm_clipped_mean": NormClippedMeanAggregator,
    "geometric_median": GeometricMedianAggregator,
}


def tolerated_attackers(aggregator: Any, n: int) -> int:
    """
    The documented breakdown point: how many of ``n`` agents may send arbitrary vectors while the error stays bounded.

    :param aggregator: one of this module's aggregators
    :param n: number of agents
    :return: the number of attackers tolerated
    """
    if n <= 2 or isinstance(aggregator, MeanAggregator):
        return 0
    if isinstance(aggregator, TrimmedMeanAggregator):
        return aggregator.n_trimmed(n)
    if isinstance(aggregator, NormClippedMeanAggregator) and aggregator.center == "zero":
        return (n - 1) // 2 if aggregator.max_norm is None else n - 1
    if isinstance(aggregator, MedianAggregator | GeometricMedianAggregator | NormClippedMeanAggregator):
        return (n - 1) // 2
    raise TypeError(f"no documented breakdown point for {aggregator!r}.")


def make_aggregator(aggregator: str | Any = "mean", **kwargs: Any) -> Any:
    """
    Build an aggregator from its name (or pass a callable through).

    :param aggregator: one of :data:`AGGREGATORS`' names, or a callable ``(n, p) -> (p,)``
    :param kwargs: the aggregator's parameters (e.g. ``trim`` for ``"trimmed_mean"``)
    :return: the aggregator
    """
    if callable(aggregator):
        if kwargs:
            raise ValueError("aggregator_kwargs only apply to an aggregator given by name.")
        return aggregator
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {aggregator!r}: choose one of {tuple(AGGREGATORS)} or pass a callable.")
    try:
        return AGGREGATORS[aggregator](**kwargs)
    except TypeError as error:
        raise ValueError(f"bad aggregator_kwargs for {aggregator!r}: {error}") from error

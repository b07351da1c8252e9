"""
Server-side reductions over agents: the mean and Byzantine-robust alternatives.

Each aggregator maps stacked per-agent vectors ``(n, p)`` (NumPy or torch) to one
vector ``(p,)`` and is a small picklable object, so it is saved with a model and shared
by the in-process algorithm and the Flower server. They are applied to both the anchor
gradients (phase 1) and the parameter changes (phase 3) of a round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

from sb3_fedpg.common.fedmath import mean_aggregate, row_norms


class MeanAggregator:
    """The plain average (the paper's rule; not robust to a single bad agent)."""

    def __call__(self, stacked: Any) -> Any:
        return mean_aggregate(stacked)

    def __repr__(self) -> str:
        return "MeanAggregator()"


class MedianAggregator:
    """Coordinate-wise median (the mean of the two middle values for an even count)."""

    def __call__(self, stacked: Any) -> Any:
        if isinstance(stacked, th.Tensor):
            # th.median returns the lower middle value; quantile interpolates like NumPy.
            return th.quantile(stacked, 0.5, dim=0)
        return np.median(stacked, axis=0)

    def __repr__(self) -> str:
        return "MedianAggregator()"


class TrimmedMeanAggregator:
    """
    Coordinate-wise trimmed mean: drop the ``⌊trim·n⌋`` largest and smallest values per coordinate.

    :param trim: fraction trimmed at each end, in ``[0, 0.5)``
    """

    def __init__(self, trim: float = 0.2) -> None:
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}.")
        self.trim = trim

    def __call__(self, stacked: Any) -> Any:
        n = stacked.shape[0]
        k = int(np.floor(self.trim * n))
        if isinstance(stacked, th.Tensor):
            ordered = th.sort(stacked, dim=0).values
        else:
            ordered = np.sort(stacked, axis=0)
        return ordered[k : n - k].mean(0)

    def __repr__(self) -> str:
        return f"TrimmedMeanAggregator(trim={self.trim})"


class NormClippedMeanAggregator:
    """
    Mean of the vectors after scaling each down to at most ``max_norm`` (bounds any one agent's pull).

    :param max_norm: the largest norm one agent's vector may have; ``None`` uses the median norm of the round
    """

    def __init__(self, max_norm: float | None = None) -> None:
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be > 0 or None, got {max_norm}.")
        self.max_norm = max_norm

    def __call__(self, stacked: Any) -> Any:
        norms = row_norms(stacked)
        if self.max_norm is None:
            limit = th.quantile(norms, 0.5) if isinstance(norms, th.Tensor) else np.median(norms)
        else:
            limit = self.max_norm
        scale = limit / (norms + 1e-12)
        scale = scale.clamp(max=1.0) if isinstance(scale, th.Tensor) else np.minimum(scale, 1.0)
        return (stacked * scale[:, None]).mean(0)

    def __repr__(self) -> str:
        return f"NormClippedMeanAggregator(max_norm={self.max_norm})"


class GeometricMedianAggregator:
    """
    Geometric median by Weiszfeld's iterations (robust to up to half of the agents).

    :param n_iterations: Weiszfeld iterations
    :param eps: smoothing that keeps the weights finite when the estimate hits a point
    """

    def __init__(self, n_iterations: int = 50, eps: float = 1e-8) -> None:
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1, got {n_iterations}.")
        self.n_iterations = n_iterations
        self.eps = eps

    def __call__(self, stacked: Any) -> Any:
        estimate = stacked.mean(0)
        for _ in range(self.n_iterations):
            weights = 1.0 / (row_norms(stacked - estimate) + self.eps)
            estimate = (stacked * weights[:, None]).sum(0) / weights.sum()
        return estimate

    def __repr__(self) -> str:
        return f"GeometricMedianAggregator(n_iterations={self.n_iterations}, eps={self.eps})"


AGGREGATORS: dict[str, type] = {
    "mean": MeanAggregator,
    "median": MedianAggregator,
    "trimmed_mean": TrimmedMeanAggregator,
    "norm_clipped_mean": NormClippedMeanAggregator,
    "geometric_median": GeometricMedianAggregator,
}


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

"""
What a federated ground-truth problem offers the runs: exact objectives and gradients, the optimum, a sampled estimator.

A problem implements :class:`GroundTruth` (the tabular MDPs in :mod:`sb3_fedpg.tabular.runs`, the LQR in
:mod:`sb3_fedpg.lqr.runs`); :mod:`sb3_fedpg.groundtruth.runs` runs Fast-FedPG, FedAvg-PG and FedSVRPG-M on any of them
and records the exact gaps. This module is NumPy only, so the problems' exact formulas stay torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import numpy as np

Baseline = Literal["none", "leave_one_out"]
#: ``grad_fn(params (N, n_params), step) -> (N, n_params)``: fedmath's gradient oracle.
GradientOracle = Callable[[np.ndarray, int], np.ndarray]


class InvalidParamsError(ValueError):
    """Parameters outside the problem's domain (LQR: a gain that destabilises the closed loop, whose cost is infinite)."""


class Optimum(NamedTuple):
    """
    The optimum of the average objective, the reference the gaps are measured against.

    :ivar objective: its value (``J*``, or the LQR's ``C̄*``)
    :ivar params: its parameters when known (the LQR's ``K*``), else ``None``
    """

    objective: float
    params: np.ndarray | None = None


@dataclass
class RunResult:
    """
    The trajectory of a federated run on a ground-truth problem.

    :param params: global parameters ``θ̄_t`` for ``t = 0 … T``, shape ``(T+1, *param_shape)``
    :param objectives: exact average objective of every ``θ̄_t``, shape ``(T+1,)``
    :param optimal_objective: the reference value the gaps are measured against
    :param drift: per round, mean over agents of ``‖θ_{i,H} − θ̄_t‖``, shape ``(T,)``
    :param correction_norm: per round, mean over agents of ``‖g − a_i‖``, shape ``(T,)``
    :param wall_time: seconds spent in the rounds (not in the final evaluation)
    :param n_samples: environment steps simulated (``0`` for exact gradients)
    :param config: the run's settings
    :param optimum: the optimal parameters when known (``None`` otherwise)
    """

    params: np.ndarray
    objectives: np.ndarray
    optimal_objective: float
    drift: np.ndarray
    correction_norm: np.ndarray
    wall_time: float
    n_samples: int = 0
    config: dict = field(default_factory=dict)
    optimum: np.ndarray | None = None

    @property
    def gaps(self) -> np.ndarray:
        """Suboptimality ``J* − J(θ̄_t)`` for ``t = 0 … T`` (can dip below 0 by round-off, ~1e-14)."""
        return self.optimal_objective - self.objectives

    @property
    def final_gap(self) -> float:
        """Suboptimality after the last round."""
        return float(self.gaps[-1])


ResultT_co = TypeVar("ResultT_co", bound=RunResult, covariant=True)


class SampledEstimator(Protocol):
    """A seeded sampled gradient oracle: one fresh batch per agent per call, counting the environment steps."""

    #: environment steps simulated so far, all agents together
    n_samples: int

    def __call__(self, params: np.ndarray, /) -> np.ndarray:
        """
        :param params: per-agent parameters ``(N, n_params)``
        :return: ascent-direction estimates of the same shape
        """


class GroundTruth(Protocol[ResultT_co]):
    """
    A federated problem with exact ground truth: what the runs of :mod:`sb3_fedpg.groundtruth.runs` need.

    Parameters are flat rows of ``n_params`` entries (one row per agent when stacked); the runs **ascend**, so the
    gradients are ascent directions on the objective the run maximises (the LQR's on ``−C_i``). The objective's own
    settings (the tabular entropy temperature, the LQR's exploration noise) belong to the implementing object.
    """

    @property
    def n_agents(self) -> int:
        """Number of agents ``N``."""

    @property
    def n_params(self) -> int:
        """Length of a parameter row."""

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The shape a parameter row is shown in (``(S, A)`` logits, ``(n_u, n_x)`` gains)."""

    @property
    def result_type(self) -> type[ResultT_co]:
        """The run's result (:class:`RunResult` or a subclass with the problem's names and gaps)."""

    def settings(self) -> dict[str, Any]:
        """The objective's settings, stored in a run's ``config``."""

    def initial_params(self, start: np.ndarray | None = None) -> np.ndarray:
        """
        :param start: initial global parameters (``n_params`` entries), or ``None`` for the problem's default
        :return: a checked copy as a flat row
        :raises ValueError: on a wrong size or parameters outside the domain
        """

    def check_params(self, params: np.ndarray) -> None:
        """
        :param params: a global iterate (flat row)
        :raises InvalidParamsError: when it lies outside the domain (the run stops there, naming the round)
        """

    def agent_objectives(self, params: np.ndarray) -> np.ndarray:
        """
        :param params: per-agent rows ``(N, n_params)``, or one row ``(n_params,)`` shared by all agents
        :return: every agent's objective ``J_i(θ_i)``, ``(N,)``, in the problem's convention (a return, or the
            LQR's cost)
        """

    def global_objectives(self, params: np.ndarray) -> np.ndarray:
        """
        :param params: a stack of global iterates ``(B, n_params)``
        :return: the average objective ``(1/N) Σ_i J_i`` of each, ``(B,)`` (what :attr:`result_type` measures gaps on)
        """

    def gradient_oracle(self, truncation: int | None = None) -> GradientOracle:
        """
        :param truncation: if given, the exact expectation of the ``K``-truncated sampled estimator (its truncation
            bias, no noise) instead of the true gradient
        :return: the exact per-agent oracle ``grad_fn(params (N, n_params), step) -> (N, n_params)`` (fedmath's
            ``GradientOracle``)
        """

    def optimum(self) -> Optimum:
        """The optimum of the average objective (may take seconds: computed once per run, after the rounds)."""

    def estimator(
        self, horizon: int, n_trajectories: int, baseline: Baseline = "leave_one_out", seed: int | None = 0
    ) -> SampledEstimator:
        """
        :param horizon: truncation ``K`` (steps per trajectory)
        :param n_trajectories: ``M`` trajectories per agent per call
        :param baseline: ``"leave_one_out"`` or ``"none"``
        :param seed: sampling seed
        :return: the problem's truncated GPOMDP estimator
        """


class GPOMDPSampler:
    """
    What the truncated GPOMDP estimators share: their settings, their seeded sampling stream, their sample count and
    the baselined reward-to-go.

    :param gamma: discount ``γ``
    :param horizon: truncation ``K``
    :param n_trajectories: ``M`` per agent per call
    :param baseline: ``"leave_one_out"`` (for trajectory ``m``, the mean reward-to-go of the agent's other ``M − 1``
        trajectories at the same step: independent of ``τ_m``, so unbiased) or ``"none"``
    :param seed: seed (or ``np.random.Generator``) of the sampling stream
    """

    def __init__(
        self, gamma: float, horizon: int, n_trajectories: int, baseline: Baseline, seed: int | np.random.Generator | None
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        if n_trajectories < 1:
            raise ValueError(f"n_trajectories must be at least 1, got {n_trajectories}")
        if baseline not in ("none", "leave_one_out"):
            raise ValueError(f"baseline must be 'none' or 'leave_one_out', got {baseline!r}")
        self.horizon = horizon
        self.n_trajectories = n_trajectories
        self.baseline = baseline
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._discounts = gamma ** np.arange(horizon)
        self.n_samples = 0  # environment steps simulated so far, all agents together

    def rewards_to_go(self, rewards: np.ndarray) -> np.ndarray:
        """
        :param rewards: ``r_h`` of every step, time-major ``(K, N, M)``
        :return: ``Σ_{k ≥ h} γ^k r_k − b_h``, ``(K, N, M)``
        """
        discounted = rewards * self._discounts[:, None, None]
        to_go = np.cumsum(discounted[::-1], 0)[::-1]  # Σ_{k'≥h} γ^{k'} r_{k'}
        m = self.n_trajectories
        if self.baseline == "leave_one_out" and m > 1:
            to_go = to_go - (to_go.sum(-1, keepdims=True) - to_go) / (m - 1)
        return to_go

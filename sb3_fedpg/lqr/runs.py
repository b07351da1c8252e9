"""
Federated runs on LQR: Fast-FedPG and FedAvg-PG with exact or sampled gradients.

A federated LQR with its exploration noise is a :class:`~sb3_fedpg.groundtruth.protocol.GroundTruth`
(:class:`LQRGroundTruth`); the rounds (:func:`sb3_fedpg.common.fedmath.fedpg_round`), the exact evaluation of every
global gain and the gaps are :mod:`sb3_fedpg.groundtruth.runs`, the same for the tabular MDPs. The federated
parameters are ``vec(K) = K.ravel()`` (row-major, ``n_u·n_x`` entries), one row per agent. fedmath **ascends**, so the
oracles return ascent directions on the return ``−C_i``: ``−∇C_i(K_i)`` (exact) or a GPOMDP estimate of it (sampled).

Guard: a gain that destabilises the closed loop (``ρ(√γ(A − BK)) ≥ 1``, infinite cost) is
never stepped through. The exact oracle raises :class:`~sb3_fedpg.lqr.exact.UnstableGainError`
(a ``ValueError``) naming the agents; the run re-raises it naming the round and the local
step and suggesting a smaller learning rate. The sampled oracle checks the same condition
before it simulates anything, and the run checks every new global gain. No NaN is produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_fedpg.common.fedmath import fedpg_round
from sb3_fedpg.groundtruth import runs as shared
from sb3_fedpg.groundtruth.protocol import Baseline, GradientOracle, Optimum, RunResult
from sb3_fedpg.groundtruth.runs import FedPG
from sb3_fedpg.lqr.exact import (
    UnstableGainError,
    agent_costs,
    agent_gradients,
    global_cost,
    optimal_gain,
    truncated_agent_gradients,
)
from sb3_fedpg.lqr.problem import FederatedLQR
from sb3_fedpg.lqr.sampled import LQRGPOMDPEstimator


@dataclass
class LQRRunResult(RunResult):
    """
    The trajectory of a federated LQR run (the LQR's names for the fields of
    :class:`~sb3_fedpg.groundtruth.protocol.RunResult`, and gaps relative to the optimal cost).

    :param params: global gains ``K̄_t`` for ``t = 0 … T``, shape ``(T+1, n_u, n_x)`` (also :attr:`gains`)
    :param objectives: exact ``C̄(K̄_t)`` (deterministic policy ``u = −K̄_t x``), shape ``(T+1,)`` (also :attr:`costs`)
    :param optimal_objective: ground truth ``C̄* = C̄(K*)`` from the Riccati equation of ``(Q̄, R̄)``
        (also :attr:`optimal_cost`)
    :param drift: per round, mean over agents of ``‖θ_{i,H} − θ̄_t‖``, shape ``(T,)``
    :param correction_norm: per round, mean over agents of ``‖g − a_i‖``, shape ``(T,)``
    :param wall_time: seconds spent in the rounds (not in the final evaluation)
    :param n_samples: environment steps simulated (``0`` for exact gradients)
    :param config: the run's settings
    :param optimum: ``K*`` (also :attr:`optimal_gain`)
    """

    @property
    def gains(self) -> np.ndarray:
        """Global gains ``K̄_t``, ``(T+1, n_u, n_x)``."""
        return self.params

    @property
    def costs(self) -> np.ndarray:
        """Exact ``C̄(K̄_t)``, ``(T+1,)``."""
        return self.objectives

    @property
    def optimal_cost(self) -> float:
        """``C̄* = C̄(K*)``."""
        return self.optimal_objective

    @property
    def optimal_gain(self) -> np.ndarray:
        """``K*``."""
        assert self.optimum is not None  # LQRGroundTruth.optimum always knows K*
        return self.optimum

    @property
    def gaps(self) -> np.ndarray:
        """Relative suboptimality ``(C̄(K̄_t) − C̄*) / C̄*`` for ``t = 0 … T`` (round-off: ~1e-15 either way)."""
        return (self.costs - self.optimal_cost) / self.optimal_cost

    @property
    def gain_errors(self) -> np.ndarray:
        """``‖K̄_t − K*‖_F`` for ``t = 0 … T``."""
        return np.linalg.norm(self.gains - self.optimal_gain, axis=(1, 2))


@dataclass(frozen=True)
class LQRGroundTruth:
    """
    A federated LQR and its exploration noise as a :class:`~sb3_fedpg.groundtruth.protocol.GroundTruth`: gains
    ``vec(K)`` (``problem.initial_gain`` by default, which must stabilise), the exact costs of the deterministic gains,
    ascent directions ``−∇C_i^σ`` of the linear-Gaussian policy's cost (same ``K*``), ``K*`` by the Riccati equation, and
    the truncated GPOMDP estimator.

    :param problem: the federated LQR
    :param exploration_std: ``σ`` of ``u = −K x + σ ε`` (gradients and sampling; the costs are the deterministic ones)
    """

    problem: FederatedLQR
    exploration_std: float = 0.0
    result_type = LQRRunResult

    @property
    def n_agents(self) -> int:
        """Number of agents ``N``."""
        return self.problem.n_agents

    @property
    def n_params(self) -> int:
        """``n_u·n_x``."""
        return self.problem.n_params

    @property
    def param_shape(self) -> tuple[int, ...]:
        """``(n_u, n_x)``."""
        return (self.problem.n_inputs, self.problem.n_states)

    def settings(self) -> dict[str, Any]:
        """``{"exploration_std": σ}``."""
        return {"exploration_std": self.exploration_std}

    def initial_params(self, start: np.ndarray | None = None) -> np.ndarray:
        """
        :param start: initial gain (``n_u·n_x`` entries); ``None``: ``problem.initial_gain``
        :return: a flat copy
        :raises ValueError: when it has the wrong size or destabilises the closed loop
        """
        if start is None:
            return np.array(self.problem.initial_gain, dtype=np.float64).ravel()
        start = np.asarray(start, dtype=np.float64)
        if start.size != self.n_params:
            raise ValueError(f"K0 must have n_u*n_x = {self.n_params} entries, got shape {start.shape}")
        if self.problem.spectral_radius(start.reshape(self.param_shape)) >= 1:
            raise ValueError("K0 destabilises the closed loop (infinite cost): start from a stabilising gain")
        return start.ravel().copy()

    def check_params(self, params: np.ndarray) -> None:
        """
        :param params: a global gain (flat)
        :raises UnstableGainError: when it destabilises the closed loop
        """
        if self.problem.spectral_radius(params.reshape(self.param_shape)) >= 1:
            raise UnstableGainError("the new global gain destabilises the closed loop (infinite cost)")

    def agent_objectives(self, params: np.ndarray) -> np.ndarray:
        """
        :param params: per-agent gains ``(N, n_u·n_x)``, or one shared ``(n_u·n_x,)``
        :return: the deterministic costs ``C_i(K_i)``, ``(N,)``
        """
        return agent_costs(self.problem, params)

    def global_objectives(self, params: np.ndarray) -> np.ndarray:
        """
        :param params: gains ``(B, n_u·n_x)``
        :return: ``C̄(K)`` of each (deterministic policy), ``(B,)``
        """
        return np.asarray(global_cost(self.problem, np.asarray(params).reshape(-1, *self.param_shape)))

    def gradient_oracle(self, truncation: int | None = None) -> GradientOracle:
        """
        :param truncation: if given, the exact expectation of the ``T``-truncated GPOMDP estimator
            (truncation bias only, no noise) instead of the true gradient
        :return: ``grad_fn(params (N, n_u·n_x), step) -> (N, n_u·n_x)``, the ascent directions ``−∇C_i^σ(K_i)``
        :raises UnstableGainError: (from the oracle) when an agent's gain destabilises the closed loop
        """
        problem, exploration_std = self.problem, self.exploration_std

        def grad_fn(params: np.ndarray, step: int) -> np.ndarray:
            if truncation is None:
                return -agent_gradients(problem, params, exploration_std).reshape(params.shape)
            K = params.reshape(problem.n_agents, problem.n_inputs, problem.n_states)
            radius = problem.spectral_radius(K)
            if np.any(radius >= 1):
                raise UnstableGainError(
                    f"agent(s) {np.flatnonzero(radius >= 1).tolist()}: the gain destabilises the closed loop"
                )
            return -truncated_agent_gradients(problem, K, truncation, exploration_std).reshape(params.shape)

        return grad_fn

    def optimum(self) -> Optimum:
        """``C̄*`` and ``K*`` from the Riccati equation of ``(Q̄, R̄)``."""
        solution = optimal_gain(self.problem)
        return Optimum(solution.cost, solution.gain)

    def estimator(
        self, horizon: int, n_trajectories: int, baseline: Baseline = "leave_one_out", seed: int | None = 0
    ) -> LQRGPOMDPEstimator:
        """The truncated GPOMDP estimator of the Gaussian policy (:class:`~sb3_fedpg.lqr.sampled.LQRGPOMDPEstimator`)."""
        return LQRGPOMDPEstimator(self.problem, horizon, n_trajectories, self.exploration_std, baseline, seed)


def _fedpg(local_steps: int, learning_rate: float, correction: bool, reuse_anchor: bool, server_learning_rate: float) -> FedPG:
    # this module's `fedpg_round`, looked up per call: the round stays patchable here (tests spy on it)
    return FedPG(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate, round_fn=fedpg_round)


def federated_run(
    problem: FederatedLQR,
    grad_fn: GradientOracle,
    local_steps: int,
    n_rounds: int,
    learning_rate: float,
    correction: bool = True,
    K0: np.ndarray | None = None,
    reuse_anchor: bool = True,
    server_learning_rate: float = 1.0,
    n_samples: Callable[[], int] | None = None,
    config: dict | None = None,
) -> LQRRunResult:
    """
    Run ``n_rounds`` rounds of :func:`~sb3_fedpg.common.fedmath.fedpg_round` with any oracle.

    :param problem: the federated LQR (for ground truth and evaluation)
    :param grad_fn: ascent oracle ``(params (N, n_u·n_x), step) -> (N, n_u·n_x)``
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
    :param K0: initial global gain (``problem.initial_gain`` if ``None``), must be stabilising
    :param reuse_anchor: reuse the anchor gradient as the first local step's gradient
    :param server_learning_rate: ``η_g``
    :param n_samples: callable returning the environment steps used so far, if any
    :param config: settings to store in the result
    :return: the :class:`LQRRunResult`
    :raises ValueError: (an :class:`UnstableGainError`) when a local or global gain destabilises
        the closed loop, naming the round and suggesting a smaller learning rate
    """
    algorithm = _fedpg(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate)
    one_round = algorithm.rounds(problem.n_agents, grad_fn)
    return shared.run_rounds(LQRGroundTruth(problem), one_round, n_rounds, K0, n_samples, config, hint=algorithm.hint)


def exact_gradient_oracle(problem: FederatedLQR, horizon: int | None = None, exploration_std: float = 0.0) -> GradientOracle:
    """
    Exact per-agent ascent directions ``−∇C_i(K_i)`` as a fedmath oracle (:meth:`LQRGroundTruth.gradient_oracle`).

    :param problem: the federated LQR
    :param horizon: if given, the exact expectation of the ``T``-truncated GPOMDP estimator
        (truncation bias only, no noise) instead of the true gradient
    :param exploration_std: ``σ`` of the linear-Gaussian policy whose cost is differentiated
    :return: ``grad_fn(params (N, n_u·n_x), step) -> (N, n_u·n_x)``
    :raises UnstableGainError: when an agent's gain destabilises the closed loop
    """
    return LQRGroundTruth(problem, exploration_std).gradient_oracle(horizon)


def exact_federated_run(
    problem: FederatedLQR,
    local_steps: int,
    n_rounds: int,
    learning_rate: float,
    correction: bool = True,
    K0: np.ndarray | None = None,
    reuse_anchor: bool = True,
    server_learning_rate: float = 1.0,
    truncation: int | None = None,
    exploration_std: float = 0.0,
) -> LQRRunResult:
    """
    Fast-FedPG (``correction=True``) or FedAvg-PG with exact LQR policy gradients.

    :param problem: the federated LQR
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param correction: Fast-FedPG or FedAvg-PG
    :param K0: initial gain (``problem.initial_gain`` if ``None``)
    :param reuse_anchor: reuse the anchor at ``ℓ = 0`` (same values with exact gradients; saves one evaluation)
    :param server_learning_rate: ``η_g``
    :param truncation: use the expected ``T``-truncated GPOMDP gradient instead of the exact one
    :param exploration_std: ``σ``: differentiate the linear-Gaussian policy's cost (same ``K*``)
    :return: the :class:`LQRRunResult`
    """
    algorithm = _fedpg(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate)
    return shared.exact_run(LQRGroundTruth(problem, exploration_std), algorithm, n_rounds, K0, truncation)


def sampled_federated_run(
    problem: FederatedLQR,
    local_steps: int,
    n_rounds: int,
    learning_rate: float,
    horizon: int,
    n_trajectories: int,
    exploration_std: float = 0.5,
    correction: bool = True,
    K0: np.ndarray | None = None,
    reuse_anchor: bool = True,
    server_learning_rate: float = 1.0,
    baseline: Baseline = "leave_one_out",
    seed: int | None = 0,
) -> LQRRunResult:
    """
    Fast-FedPG or FedAvg-PG with truncated GPOMDP gradients of the linear-Gaussian policy.

    Each oracle call draws a fresh independent batch for every agent (see
    :class:`~sb3_fedpg.lqr.sampled.LQRGPOMDPEstimator`); the anchor batch is reused at
    ``ℓ = 0`` when ``reuse_anchor``. The recorded gaps are exact (``C̄`` of the deterministic
    gain ``K̄_t``; the stochastic policy's optimum is the same ``K*``).

    :param problem: the federated LQR
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param horizon: truncation ``K`` (steps per trajectory)
    :param n_trajectories: ``M`` per agent per batch
    :param exploration_std: ``σ`` of ``u = −K x + σ ε``
    :param correction: Fast-FedPG or FedAvg-PG
    :param K0: initial gain
    :param reuse_anchor: reuse the anchor batch at ``ℓ = 0``
    :param server_learning_rate: ``η_g``
    :param baseline: ``"leave_one_out"`` or ``"none"``
    :param seed: sampling seed
    :return: the :class:`LQRRunResult`
    """
    algorithm = _fedpg(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate)
    truth = LQRGroundTruth(problem, exploration_std)
    return shared.sampled_run(truth, algorithm, n_rounds, horizon, n_trajectories, baseline, seed, K0)

"""
Federated runs on LQR: Fast-FedPG and FedAvg-PG with exact or sampled gradients.

Every round is one call of :func:`sb3_fedpg.common.fedmath.fedpg_round` — the same
correction and aggregation code the neural algorithm, the tabular runs and the Flower apps
use. The federated parameters are ``vec(K) = K.ravel()`` (row-major, ``n_u·n_x`` entries),
one row per agent. fedmath **ascends**, so the oracles return ascent directions on the
return ``−C_i``: ``−∇C_i(K_i)`` (exact) or a GPOMDP estimate of it (sampled).

Guard: a gain that destabilises the closed loop (``ρ(√γ(A − BK)) ≥ 1``, infinite cost) is
never stepped through. The exact oracle raises :class:`~sb3_fedpg.lqr.exact.UnstableGainError`
(a ``ValueError``) naming the agents; the run re-raises it naming the round and the local
step and suggesting a smaller learning rate. The sampled oracle checks the same condition
before it simulates anything, and the run checks every new global gain. No NaN is produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sb3_fedpg.common.fedmath import fedpg_round, gradient_step
from sb3_fedpg.common.hyperparams import positive_float
from sb3_fedpg.lqr.exact import (
    UnstableGainError,
    agent_gradients,
    global_cost,
    optimal_gain,
    truncated_agent_gradients,
)
from sb3_fedpg.lqr.problem import FederatedLQR
from sb3_fedpg.lqr.sampled import LQRGPOMDPEstimator


@dataclass
class LQRRunResult:
    """
    The trajectory of a federated LQR run.

    :param gains: global gains ``K̄_t`` for ``t = 0 … T``, shape ``(T+1, n_u, n_x)``
    :param costs: exact ``C̄(K̄_t)`` (deterministic policy ``u = −K̄_t x``), shape ``(T+1,)``
    :param optimal_cost: ground truth ``C̄* = C̄(K*)`` from the Riccati equation of ``(Q̄, R̄)``
    :param optimal_gain: ``K*``
    :param drift: per round, mean over agents of ``‖θ_{i,H} − θ̄_t‖``, shape ``(T,)``
    :param correction_norm: per round, mean over agents of ``‖g − a_i‖``, shape ``(T,)``
    :param wall_time: seconds spent in the rounds (not in the final evaluation)
    :param n_samples: environment steps simulated (``0`` for exact gradients)
    :param config: the run's settings
    """

    gains: np.ndarray
    costs: np.ndarray
    optimal_cost: float
    optimal_gain: np.ndarray
    drift: np.ndarray
    correction_norm: np.ndarray
    wall_time: float
    n_samples: int = 0
    config: dict = field(default_factory=dict)

    @property
    def gaps(self) -> np.ndarray:
        """Relative suboptimality ``(C̄(K̄_t) − C̄*) / C̄*`` for ``t = 0 … T`` (round-off: ~1e-15 either way)."""
        return (self.costs - self.optimal_cost) / self.optimal_cost

    @property
    def final_gap(self) -> float:
        """Relative suboptimality after the last round."""
        return float(self.gaps[-1])

    @property
    def gain_errors(self) -> np.ndarray:
        """``‖K̄_t − K*‖_F`` for ``t = 0 … T``."""
        return np.linalg.norm(self.gains - self.optimal_gain, axis=(1, 2))


def _initial_params(problem: FederatedLQR, K0: np.ndarray | None) -> np.ndarray:
    if K0 is None:
        return np.array(problem.initial_gain, dtype=np.float64).ravel()
    K0 = np.asarray(K0, dtype=np.float64)
    if K0.size != problem.n_params:
        raise ValueError(f"K0 must have n_u*n_x = {problem.n_params} entries, got shape {K0.shape}")
    if problem.spectral_radius(K0.reshape(problem.n_inputs, problem.n_states)) >= 1:
        raise ValueError("K0 destabilises the closed loop (infinite cost): start from a stabilising gain")
    return K0.ravel().copy()


def federated_run(
    problem: FederatedLQR,
    grad_fn: Callable[[np.ndarray, int], np.ndarray],
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
    if local_steps < 1 or n_rounds < 0:
        raise ValueError(f"need local_steps >= 1 and n_rounds >= 0, got {local_steps} and {n_rounds}")
    positive_float("learning_rate", learning_rate)
    positive_float("server_learning_rate", server_learning_rate)
    shape = (problem.n_inputs, problem.n_states)
    params = _initial_params(problem, K0)
    history = np.empty((n_rounds + 1, problem.n_params))
    history[0] = params
    drift = np.empty(n_rounds)
    correction_norm = np.empty(n_rounds)
    update = gradient_step(learning_rate)
    start = time.perf_counter()
    for t in range(n_rounds):

        def oracle(stacked: np.ndarray, step: int, t: int = t) -> np.ndarray:
            try:
                return grad_fn(stacked, step)
            except UnstableGainError as err:
                where = "the anchor" if step < 0 else f"local step {step}"
                raise UnstableGainError(
                    f"round {t} ({where}, learning_rate={learning_rate}, H={local_steps}): {err}"
                ) from None

        result = fedpg_round(
            params,
            oracle,
            problem.n_agents,
            local_steps,
            update,
            server_learning_rate=server_learning_rate,
            correction=correction,
            reuse_anchor=reuse_anchor,
        )
        params = result.params
        if problem.spectral_radius(params.reshape(shape)) >= 1:
            raise UnstableGainError(
                f"round {t}: the new global gain destabilises the closed loop (infinite cost); "
                f"use a smaller learning rate than {learning_rate} or fewer local steps than {local_steps}"
            )
        history[t + 1] = params
        drift[t] = result.drift
        correction_norm[t] = result.correction_norm
    wall_time = time.perf_counter() - start
    gains = history.reshape(n_rounds + 1, *shape)
    solution = optimal_gain(problem)
    return LQRRunResult(
        gains=gains,
        costs=np.asarray(global_cost(problem, gains)),
        optimal_cost=solution.cost,
        optimal_gain=solution.gain,
        drift=drift,
        correction_norm=correction_norm,
        wall_time=wall_time,
        n_samples=n_samples() if n_samples is not None else 0,
        config=dict(config or {}),
    )


def exact_gradient_oracle(
    problem: FederatedLQR, horizon: int | None = None, exploration_std: float = 0.0
) -> Callable[[np.ndarray, int], np.ndarray]:
    """
    Exact per-agent ascent directions ``−∇C_i(K_i)`` as a fedmath oracle.

    :param problem: the federated LQR
    :param horizon: if given, the exact expectation of the ``T``-truncated GPOMDP estimator
        (truncation bias only, no noise) instead of the true gradient
    :param exploration_std: ``σ`` of the linear-Gaussian policy whose cost is differentiated
    :return: ``grad_fn(params (N, n_u·n_x), step) -> (N, n_u·n_x)``
    :raises UnstableGainError: when an agent's gain destabilises the closed loop
    """

    def grad_fn(params: np.ndarray, step: int) -> np.ndarray:
        if horizon is None:
            return -agent_gradients(problem, params, exploration_std).reshape(params.shape)
        K = params.reshape(problem.n_agents, problem.n_inputs, problem.n_states)
        radius = problem.spectral_radius(K)
        if np.any(radius >= 1):
            raise UnstableGainError(f"agent(s) {np.flatnonzero(radius >= 1).tolist()}: the gain destabilises the closed loop")
        return -truncated_agent_gradients(problem, K, horizon, exploration_std).reshape(params.shape)

    return grad_fn


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
    config = dict(
        estimator="exact" if truncation is None else "truncated",
        truncation=truncation,
        exploration_std=exploration_std,
        local_steps=local_steps,
        n_rounds=n_rounds,
        learning_rate=learning_rate,
        correction=correction,
        reuse_anchor=reuse_anchor,
        server_learning_rate=server_learning_rate,
    )
    return federated_run(
        problem,
        exact_gradient_oracle(problem, truncation, exploration_std),
        local_steps,
        n_rounds,
        learning_rate,
        correction,
        K0,
        reuse_anchor,
        server_learning_rate,
        config=config,
    )


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
    baseline: str = "leave_one_out",
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
    estimator = LQRGPOMDPEstimator(problem, horizon, n_trajectories, exploration_std, baseline, seed)
    config = dict(
        estimator="gpomdp",
        local_steps=local_steps,
        n_rounds=n_rounds,
        learning_rate=learning_rate,
        horizon=horizon,
        n_trajectories=n_trajectories,
        exploration_std=exploration_std,
        correction=correction,
        reuse_anchor=reuse_anchor,
        server_learning_rate=server_learning_rate,
        baseline=baseline,
        seed=seed,
    )
    return federated_run(
        problem,
        lambda params, step: estimator(params),
        local_steps,
        n_rounds,
        learning_rate,
        correction,
        K0,
        reuse_anchor,
        server_learning_rate,
        n_samples=lambda: estimator.n_samples,
        config=config,
    )

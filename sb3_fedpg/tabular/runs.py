"""
Federated runs on tabular MDPs: Fast-FedPG, FedAvg-PG and FedSVRPG-M with exact or sampled gradients.

Every Fast-FedPG / FedAvg-PG round is one call of :func:`sb3_fedpg.common.fedmath.fedpg_round`, every FedSVRPG-M
round one :func:`sb3_fedpg.common.fedmath.run_round` with :class:`~sb3_fedpg.common.fedmath.MomentumSteps` — the same
round, local-solver and aggregation code the neural algorithms and the Flower apps use. This module only supplies
gradient oracles (``grad_fn(params (N, S·A), step) -> (N, S·A)``, FedSVRPG-M's
:class:`~sb3_fedpg.common.fedmath.MomentumOracle`) and records exact suboptimality gaps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sb3_fedpg.common.fedmath import (
    MomentumOracle,
    MomentumSteps,
    RoundResult,
    broadcast_to_agents,
    fedpg_round,
    gradient_step,
    importance_weights,
    run_round,
    server_momentum,
)
from sb3_fedpg.common.hyperparams import positive_float
from sb3_fedpg.tabular.exact import (
    agent_gradients,
    global_objective,
    optimal_objective,
    single_threaded_torch,
    truncated_policy_gradient,
)
from sb3_fedpg.tabular.mdp import FederatedTabularMDP
from sb3_fedpg.tabular.reference import reference_optimum
from sb3_fedpg.tabular.sampled import Baseline, GPOMDPEstimator


@dataclass
class TabularRunResult:
    """
    The trajectory of a federated tabular run.

    :param params: global parameters ``θ̄_t`` for ``t = 0 … T``, shape ``(T+1, S, A)``
    :param objectives: exact ``J(θ̄_t)`` (average over agents, entropy-regularised if ``τ > 0``), shape ``(T+1,)``
    :param optimal_objective: ground truth ``J*`` from (soft) value iteration (shared
        transitions), or the reference optimum (per-agent transitions, see
        :func:`~sb3_fedpg.tabular.reference_optimum`), or the value passed as ``reference_objective``
    :param drift: per round, mean over agents of ``‖θ_{i,H} − θ̄_t‖``, shape ``(T,)``
    :param correction_norm: per round, mean over agents of ``‖g − a_i‖``, shape ``(T,)``
    :param wall_time: seconds spent in the rounds (not in the final evaluation)
    :param n_samples: environment steps simulated (``0`` for exact gradients)
    :param config: the run's settings
    """

    params: np.ndarray
    objectives: np.ndarray
    optimal_objective: float
    drift: np.ndarray
    correction_norm: np.ndarray
    wall_time: float
    n_samples: int = 0
    config: dict = field(default_factory=dict)

    @property
    def gaps(self) -> np.ndarray:
        """Suboptimality ``J* − J(θ̄_t)`` for ``t = 0 … T`` (can dip below 0 by round-off, ~1e-14)."""
        return self.optimal_objective - self.objectives

    @property
    def final_gap(self) -> float:
        """Suboptimality after the last round."""
        return float(self.gaps[-1])


def _initial_params(mdp: FederatedTabularMDP, theta0: np.ndarray | None) -> np.ndarray:
    if theta0 is None:
        # θ0 = 0: the uniform policy, the paper-style neutral start
        return np.zeros(mdp.n_params)
    theta0 = np.asarray(theta0, dtype=np.float64)
    if theta0.size != mdp.n_params:
        raise ValueError(f"theta0 must have S*A = {mdp.n_params} entries, got shape {theta0.shape}")
    return theta0.reshape(mdp.n_params).copy()


def reference_objective_of(mdp: FederatedTabularMDP, tau: float) -> float:
    """
    The value gaps are measured against when none is given.

    :param mdp: the federated MDP
    :param tau: entropy temperature
    :return: ``J*`` by (soft) value iteration for shared transitions; for per-agent
        transitions the default :func:`~sb3_fedpg.tabular.reference_optimum` (20 starts, ~seconds)
    """
    if mdp.shared_transitions:
        return optimal_objective(mdp, tau).objective
    return reference_optimum(mdp, tau).objective


def federated_run(
    mdp: FederatedTabularMDP,
    grad_fn: Callable[[np.ndarray, int], np.ndarray],
    local_steps: int,
    n_rounds: int,
    learning_rate: float,
    tau: float = 0.0,
    correction: bool = True,
    theta0: np.ndarray | None = None,
    reuse_anchor: bool = True,
    server_learning_rate: float = 1.0,
    n_samples: Callable[[], int] | None = None,
    config: dict | None = None,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    Run ``n_rounds`` rounds of :func:`~sb3_fedpg.common.fedmath.fedpg_round` with any oracle.

    :param mdp: the federated MDP (for ground truth and evaluation)
    :param grad_fn: gradient oracle ``(params (N, S·A), step) -> (N, S·A)``
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param tau: entropy temperature of the objective being evaluated
    :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
    :param theta0: initial global parameters (``S·A`` entries); zeros (uniform policy) if ``None``
    :param reuse_anchor: reuse the anchor gradient as the first local step's gradient
        (exact: identical anyway; sampled: saves one batch per round)
    :param server_learning_rate: ``η_g``
    :param n_samples: callable returning the environment steps used so far, if any
    :param config: settings to store in the result
    :param reference_objective: the value gaps are measured against; ``None``: see
        :func:`reference_objective_of` (pass it to share one reference between runs)
    :return: the :class:`TabularRunResult`
    """
    if local_steps < 1 or n_rounds < 0:
        raise ValueError(f"need local_steps >= 1 and n_rounds >= 0, got {local_steps} and {n_rounds}")
    positive_float("learning_rate", learning_rate)
    positive_float("server_learning_rate", server_learning_rate)
    update = gradient_step(learning_rate)

    def one_round(params: np.ndarray) -> RoundResult:
        return fedpg_round(
            params,
            grad_fn,
            mdp.n_agents,
            local_steps,
            update,
            server_learning_rate=server_learning_rate,
            correction=correction,
            reuse_anchor=reuse_anchor,
        )

    return run_rounds(mdp, one_round, n_rounds, tau, theta0, n_samples, config, reference_objective)


def run_rounds(
    mdp: FederatedTabularMDP,
    one_round: Callable[[np.ndarray], RoundResult],
    n_rounds: int,
    tau: float = 0.0,
    theta0: np.ndarray | None = None,
    n_samples: Callable[[], int] | None = None,
    config: dict | None = None,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    Run ``n_rounds`` rounds of any federated algorithm and evaluate every global iterate exactly.

    :param mdp: the federated MDP (for ground truth and evaluation)
    :param one_round: ``θ̄_t ↦`` the round's :class:`~sb3_fedpg.common.fedmath.RoundResult` (an algorithm's state
        between rounds lives in the callable)
    :param n_rounds: ``T``
    :param tau: entropy temperature of the objective being evaluated
    :param theta0: initial global parameters (``S·A`` entries); zeros (uniform policy) if ``None``
    :param n_samples: callable returning the environment steps used so far, if any
    :param config: settings to store in the result
    :param reference_objective: the value gaps are measured against (``None``: :func:`reference_objective_of`)
    :return: the :class:`TabularRunResult`
    """
    if n_rounds < 0:
        raise ValueError(f"need n_rounds >= 0, got {n_rounds}")
    params = _initial_params(mdp, theta0)
    history: np.ndarray = np.empty((n_rounds + 1, mdp.n_params))
    history[0] = params
    drift = np.empty(n_rounds)
    correction_norm = np.empty(n_rounds)
    start = time.perf_counter()
    with single_threaded_torch():
        for t in range(n_rounds):
            result = one_round(params)
            params = result.params
            history[t + 1] = params
            drift[t] = result.drift
            correction_norm[t] = result.correction_norm
    wall_time = time.perf_counter() - start
    history = history.reshape(n_rounds + 1, mdp.n_states, mdp.n_actions)
    # evaluate all rounds at once, in chunks to bound the (chunk, S, S) memory (per-agent
    # transitions: (chunk·N, S, A, S) kernels)
    per_params = mdp.n_states**2 if mdp.shared_transitions else mdp.n_agents * mdp.n_actions * mdp.n_states**2
    chunk = max(1, 2**22 // per_params)
    with single_threaded_torch():
        objectives = np.concatenate(
            [global_objective(mdp, history[i : i + chunk], tau) for i in range(0, n_rounds + 1, chunk)]
        )
    return TabularRunResult(
        params=history,
        objectives=objectives,
        optimal_objective=reference_objective_of(mdp, tau) if reference_objective is None else float(reference_objective),
        drift=drift,
        correction_norm=correction_norm,
        wall_time=wall_time,
        n_samples=n_samples() if n_samples is not None else 0,
        config=dict(config or {}),
    )


def exact_gradient_oracle(mdp: FederatedTabularMDP, tau: float = 0.0, horizon: int | None = None):
    """
    Exact per-agent gradients as a fedmath gradient oracle.

    :param mdp: the federated MDP
    :param tau: entropy temperature
    :param horizon: if given, the exact expectation of the ``K``-truncated GPOMDP estimator
        (truncation bias only, no noise) instead of the true gradient
    :return: ``grad_fn(params (N, S·A), step) -> (N, S·A)``
    """

    def grad_fn(params: np.ndarray, step: int) -> np.ndarray:
        theta = params.reshape(mdp.n_agents, mdp.n_states, mdp.n_actions)
        if horizon is None:
            grads = agent_gradients(mdp, theta, tau)
        else:
            grads = truncated_policy_gradient(mdp, theta, horizon, tau)
        return grads.reshape(params.shape)

    return grad_fn


def exact_federated_run(
    mdp: FederatedTabularMDP,
    local_steps: int,
    n_rounds: int,
    learning_rate: float = 1.0,
    tau: float = 0.0,
    correction: bool = True,
    theta0: np.ndarray | None = None,
    reuse_anchor: bool = True,
    server_learning_rate: float = 1.0,
    truncation: int | None = None,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    Fast-FedPG (``correction=True``) or FedAvg-PG with exact softmax policy gradients.

    :param mdp: the federated MDP
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param tau: entropy temperature (objective: average of entropy-regularised ``J_i``)
    :param correction: Fast-FedPG or FedAvg-PG
    :param theta0: initial parameters (``S·A`` entries), zeros if ``None``
    :param reuse_anchor: reuse the anchor at ``ℓ = 0`` (no effect on the values with exact
        gradients; saves one gradient evaluation)
    :param server_learning_rate: ``η_g``
    :param truncation: use the expected ``K``-truncated GPOMDP gradient instead of the exact one
    :param reference_objective: the value gaps are measured against (default: value iteration
        for shared transitions, :func:`~sb3_fedpg.tabular.reference_optimum` for per-agent ones)
    :return: the :class:`TabularRunResult`
    """
    config = dict(
        estimator="exact" if truncation is None else "truncated",
        local_steps=local_steps,
        n_rounds=n_rounds,
        learning_rate=learning_rate,
        tau=tau,
        correction=correction,
        reuse_anchor=reuse_anchor,
        server_learning_rate=server_learning_rate,
        truncation=truncation,
    )
    return federated_run(
        mdp,
        exact_gradient_oracle(mdp, tau, truncation),
        local_steps,
        n_rounds,
        learning_rate,
        tau,
        correction,
        theta0,
        reuse_anchor,
        server_learning_rate,
        config=config,
        reference_objective=reference_objective,
    )


def sampled_federated_run(
    mdp: FederatedTabularMDP,
    local_steps: int,
    n_rounds: int,
    learning_rate: float,
    horizon: int,
    n_trajectories: int,
    tau: float = 0.0,
    correction: bool = True,
    theta0: np.ndarray | None = None,
    reuse_anchor: bool = True,
    server_learning_rate: float = 1.0,
    baseline: Baseline = "leave_one_out",
    seed: int | None = 0,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    Fast-FedPG or FedAvg-PG with truncated GPOMDP gradients (``K`` steps, ``M`` trajectories).

    Each oracle call draws a fresh independent batch for every agent; the anchor batch is
    reused at ``ℓ = 0`` when ``reuse_anchor`` (so a round costs ``H`` batches per agent,
    ``H + 1`` otherwise).

    :param mdp: the federated MDP
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param horizon: truncation ``K``
    :param n_trajectories: ``M`` trajectories per agent per batch
    :param tau: entropy temperature
    :param correction: Fast-FedPG or FedAvg-PG
    :param theta0: initial parameters (``S·A`` entries), zeros if ``None``
    :param reuse_anchor: reuse the anchor batch at ``ℓ = 0``
    :param server_learning_rate: ``η_g``
    :param baseline: GPOMDP baseline (see :class:`~sb3_fedpg.tabular.sampled.GPOMDPEstimator`)
    :param seed: sampling seed
    :param reference_objective: the value gaps are measured against (default as in :func:`exact_federated_run`)
    :return: the :class:`TabularRunResult` (exact gaps of the sampled iterates)
    """
    estimator = GPOMDPEstimator(mdp, horizon, n_trajectories, tau, baseline, seed)
    config = dict(
        estimator="gpomdp",
        local_steps=local_steps,
        n_rounds=n_rounds,
        learning_rate=learning_rate,
        horizon=horizon,
        n_trajectories=n_trajectories,
        tau=tau,
        correction=correction,
        reuse_anchor=reuse_anchor,
        server_learning_rate=server_learning_rate,
        baseline=baseline,
        seed=seed,
    )
    return federated_run(
        mdp,
        lambda params, step: estimator(params),
        local_steps,
        n_rounds,
        learning_rate,
        tau,
        correction,
        theta0,
        reuse_anchor,
        server_learning_rate,
        n_samples=lambda: estimator.n_samples,
        config=config,
        reference_objective=reference_objective,
    )


# ---------------------------------------------------------------- FedSVRPG-M
#: ``make_oracle(θ̄_{r−1}) -> MomentumOracle``: a round's FedSVRPG-M oracle, given the previous global parameters.
MomentumOracleFactory = Callable[[np.ndarray], MomentumOracle]


def svrpgm_run(
    mdp: FederatedTabularMDP,
    make_oracle: MomentumOracleFactory,
    local_steps: int,
    n_rounds: int,
    learning_rate: float,
    momentum_coef: float,
    tau: float = 0.0,
    theta0: np.ndarray | None = None,
    server_learning_rate: float = 1.0,
    n_samples: Callable[[], int] | None = None,
    config: dict | None = None,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    FedSVRPG-M (Wang et al., ICML 2024, Algorithm 1) with any oracle: each round is
    :func:`~sb3_fedpg.common.fedmath.run_round` with :class:`~sb3_fedpg.common.fedmath.MomentumSteps`; the server
    keeps the momentum ``u_{r+1}`` (:func:`~sb3_fedpg.common.fedmath.server_momentum`) and ``θ̄_r`` for the next round.

    :param mdp: the federated MDP
    :param make_oracle: the round's oracle given ``θ̄_{r−1}`` (``θ̄_0`` in the first round)
    :param local_steps: ``H`` (the paper's ``K``)
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param momentum_coef: ``β ∈ (0, 1]`` (``1``: FedAvg-PG)
    :param tau: entropy temperature of the objective
    :param theta0: initial parameters (``S·A`` entries), zeros if ``None``
    :param server_learning_rate: ``η_g`` (the paper's global step ``λ = η_g η H``)
    :param n_samples: callable returning the environment steps used so far, if any
    :param config: settings to store in the result
    :param reference_objective: the value gaps are measured against (default as in :func:`exact_federated_run`)
    :return: the :class:`TabularRunResult` (``correction_norm``: ``‖u_0 − a_i‖`` in the first round, 0 after: only the
        first round exchanges anchors)
    """
    if local_steps < 1 or n_rounds < 0:
        raise ValueError(f"need local_steps >= 1 and n_rounds >= 0, got {local_steps} and {n_rounds}")
    if not 0 < momentum_coef <= 1:
        raise ValueError(f"momentum_coef must be in (0, 1], got {momentum_coef!r}")
    positive_float("learning_rate", learning_rate)
    positive_float("server_learning_rate", server_learning_rate)
    update = gradient_step(learning_rate)
    memory: dict[str, np.ndarray | None] = {"momentum": None, "previous": None}

    def one_round(params: np.ndarray) -> RoundResult:
        previous = params if memory["previous"] is None else memory["previous"]  # θ̄_{−1} = θ̄_0
        solver = MomentumSteps(make_oracle(previous), local_steps, update, momentum_coef, memory["momentum"])
        result = run_round(params, solver, mdp.n_agents, server_learning_rate)
        memory["momentum"] = server_momentum(params, result.local_params, learning_rate, local_steps)
        memory["previous"] = params
        return result

    return run_rounds(mdp, one_round, n_rounds, tau, theta0, n_samples, config, reference_objective)


def exact_svrpgm_oracle(mdp: FederatedTabularMDP, tau: float = 0.0, horizon: int | None = None) -> MomentumOracleFactory:
    """
    FedSVRPG-M's oracle with exact gradients: ``ĝ_i(θ_{i,k}) = ∇J_i(θ_{i,k})`` and the importance-weighted term's
    expectation ``∇J_i(θ̄_{r−1})``.

    :param mdp: the federated MDP
    :param tau: entropy temperature
    :param horizon: if given, the exact expectation of the ``K``-truncated GPOMDP estimator instead
    :return: ``make_oracle(θ̄_{r−1})``
    """
    grad_fn = exact_gradient_oracle(mdp, tau, horizon)

    def make_oracle(previous: np.ndarray) -> MomentumOracle:
        at_previous = grad_fn(broadcast_to_agents(previous, mdp.n_agents), -1)

        def oracle(params: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
            return grad_fn(params, step), at_previous

        return oracle

    return make_oracle


def sampled_svrpgm_oracle(estimator: GPOMDPEstimator, max_importance_weight: float | None = None) -> MomentumOracleFactory:
    """
    FedSVRPG-M's oracle with truncated GPOMDP gradients: every call samples ``M`` fresh trajectories per agent at
    ``θ_{i,k}`` and returns ``ĝ_i(θ_{i,k}; B)`` and, on the same trajectories, ``(1/M) Σ_m w_m ĝ_i(θ̄_{r−1}; τ_m)``
    with the exact importance weights ``w_m = p(τ_m | θ̄_{r−1}) / p(τ_m | θ_{i,k})`` of the softmax policies
    (:func:`~sb3_fedpg.common.fedmath.importance_weights`; the transitions cancel).

    :param estimator: the GPOMDP estimator (its sampling stream and sample count)
    :param max_importance_weight: truncate the weights from above (``None``: the paper's exact weights)
    :return: ``make_oracle(θ̄_{r−1})``
    """
    n_agents = estimator.mdp.n_agents

    def make_oracle(previous: np.ndarray) -> MomentumOracle:
        at_previous = broadcast_to_agents(previous, n_agents)

        def oracle(params: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
            trajectories = estimator.sample(params)
            weights = importance_weights(
                estimator.log_likelihood(at_previous, trajectories),
                estimator.log_likelihood(params, trajectories),
                time_axis=0,
                max_weight=max_importance_weight,
            )
            return estimator.gradient(params, trajectories), estimator.gradient(at_previous, trajectories, weights)

        return oracle

    return make_oracle


def exact_svrpgm_run(
    mdp: FederatedTabularMDP,
    local_steps: int,
    n_rounds: int,
    learning_rate: float = 1.0,
    momentum_coef: float = 0.5,
    tau: float = 0.0,
    theta0: np.ndarray | None = None,
    server_learning_rate: float = 1.0,
    truncation: int | None = None,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    FedSVRPG-M with exact softmax policy gradients (the momentum's noise-free dynamics).

    :param mdp: the federated MDP
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param momentum_coef: ``β ∈ (0, 1]``
    :param tau: entropy temperature
    :param theta0: initial parameters (``S·A`` entries), zeros if ``None``
    :param server_learning_rate: ``η_g``
    :param truncation: use the expected ``K``-truncated GPOMDP gradient instead of the exact one
    :param reference_objective: the value gaps are measured against
    :return: the :class:`TabularRunResult`
    """
    config = dict(
        algorithm="fedsvrpg_m",
        estimator="exact" if truncation is None else "truncated",
        local_steps=local_steps,
        n_rounds=n_rounds,
        learning_rate=learning_rate,
        momentum_coef=momentum_coef,
        tau=tau,
        server_learning_rate=server_learning_rate,
        truncation=truncation,
    )
    return svrpgm_run(
        mdp,
        exact_svrpgm_oracle(mdp, tau, truncation),
        local_steps,
        n_rounds,
        learning_rate,
        momentum_coef,
        tau,
        theta0,
        server_learning_rate,
        config=config,
        reference_objective=reference_objective,
    )


def sampled_svrpgm_run(
    mdp: FederatedTabularMDP,
    local_steps: int,
    n_rounds: int,
    learning_rate: float,
    horizon: int,
    n_trajectories: int,
    momentum_coef: float = 0.5,
    tau: float = 0.0,
    theta0: np.ndarray | None = None,
    server_learning_rate: float = 1.0,
    baseline: Baseline = "leave_one_out",
    max_importance_weight: float | None = None,
    seed: int | None = 0,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    FedSVRPG-M with truncated GPOMDP gradients (``K`` steps, ``M`` trajectories per agent per local step) and exact
    importance weights. A round costs ``H`` batches per agent, as Fast-FedPG's and FedAvg-PG's with the anchor batch
    reused (:func:`sampled_federated_run`): equal rounds are equal samples.

    :param mdp: the federated MDP
    :param local_steps: ``H``
    :param n_rounds: ``T``
    :param learning_rate: local step size ``η``
    :param horizon: truncation ``K``
    :param n_trajectories: ``M`` trajectories per agent per batch
    :param momentum_coef: ``β ∈ (0, 1]``
    :param tau: entropy temperature
    :param theta0: initial parameters (``S·A`` entries), zeros if ``None``
    :param server_learning_rate: ``η_g``
    :param baseline: GPOMDP baseline (see :class:`~sb3_fedpg.tabular.sampled.GPOMDPEstimator`)
    :param max_importance_weight: truncate the importance weights from above (``None``: exact, the paper's)
    :param seed: sampling seed
    :param reference_objective: the value gaps are measured against
    :return: the :class:`TabularRunResult` (exact gaps of the sampled iterates)
    """
    estimator = GPOMDPEstimator(mdp, horizon, n_trajectories, tau, baseline, seed)
    config = dict(
        algorithm="fedsvrpg_m",
        estimator="gpomdp",
        local_steps=local_steps,
        n_rounds=n_rounds,
        learning_rate=learning_rate,
        horizon=horizon,
        n_trajectories=n_trajectories,
        momentum_coef=momentum_coef,
        tau=tau,
        server_learning_rate=server_learning_rate,
        baseline=baseline,
        max_importance_weight=max_importance_weight,
        seed=seed,
    )
    return svrpgm_run(
        mdp,
        sampled_svrpgm_oracle(estimator, max_importance_weight),
        local_steps,
        n_rounds,
        learning_rate,
        momentum_coef,
        tau,
        theta0,
        server_learning_rate,
        n_samples=lambda: estimator.n_samples,
        config=config,
        reference_objective=reference_objective,
    )

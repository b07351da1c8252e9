"""
Federated runs on tabular MDPs: Fast-FedPG, FedAvg-PG and FedSVRPG-M with exact or sampled gradients.

A federated MDP with its entropy temperature is a :class:`~sb3_fedpg.groundtruth.protocol.GroundTruth`
(:class:`TabularGroundTruth`); the rounds, the exact evaluation of every global iterate and the gaps are
:mod:`sb3_fedpg.groundtruth.runs`, the same for the LQR. This module keeps the tabular names and defaults
(``theta0``, ``tau``, parameters shown as ``(S, A)`` logits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_fedpg.common.fedmath import fedpg_round
from sb3_fedpg.groundtruth import runs as shared
from sb3_fedpg.groundtruth.protocol import GradientOracle, Optimum, RunResult
from sb3_fedpg.groundtruth.runs import FedPG, FedSVRPGM, MomentumOracleFactory, OneRound, single_threaded_torch
from sb3_fedpg.tabular.exact import (
    agent_gradients,
    agent_objectives,
    global_objective,
    optimal_objective,
    truncated_policy_gradient,
)
from sb3_fedpg.tabular.mdp import FederatedTabularMDP
from sb3_fedpg.tabular.reference import reference_optimum
from sb3_fedpg.tabular.sampled import Baseline, GPOMDPEstimator


@dataclass
class TabularRunResult(RunResult):
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
    :param optimum: ``None`` (the optimum's logits are not kept)
    """


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


@dataclass(frozen=True)
class TabularGroundTruth:
    """
    A federated MDP and its entropy temperature as a :class:`~sb3_fedpg.groundtruth.protocol.GroundTruth`: softmax
    logits ``θ`` (``S·A`` per agent, zeros = the uniform policy by default), the entropy-regularised objectives and
    their exact gradients, ``J*`` by (soft) value iteration or :func:`~sb3_fedpg.tabular.reference_optimum`, and the
    truncated GPOMDP estimator.

    :param mdp: the federated MDP
    :param tau: entropy temperature
    """

    mdp: FederatedTabularMDP
    tau: float = 0.0
    result_type = TabularRunResult

    @property
    def n_agents(self) -> int:
        """Number of agents ``N``."""
        return self.mdp.n_agents

    @property
    def n_params(self) -> int:
        """``S·A``."""
        return self.mdp.n_params

    @property
    def param_shape(self) -> tuple[int, ...]:
        """``(S, A)``."""
        return (self.mdp.n_states, self.mdp.n_actions)

    def settings(self) -> dict[str, Any]:
        """``{"tau": τ}``."""
        return {"tau": self.tau}

    def initial_params(self, start: np.ndarray | None = None) -> np.ndarray:
        """
        :param start: initial logits (``S·A`` entries); ``None``: zeros, the uniform policy (the paper-style neutral start)
        :return: a flat copy
        """
        if start is None:
            return np.zeros(self.n_params)
        start = np.asarray(start, dtype=np.float64)
        if start.size != self.n_params:
            raise ValueError(f"theta0 must have S*A = {self.n_params} entries, got shape {start.shape}")
        return start.reshape(self.n_params).copy()

    def check_params(self, params: np.ndarray) -> None:
        """Every logit vector is a policy: nothing to check."""

    def agent_objectives(self, params: np.ndarray) -> np.ndarray:
        """
        :param params: per-agent logits ``(N, S·A)``, or shared ``(S·A,)``
        :return: ``J_i(θ_i)``, ``(N,)``
        """
        params = np.asarray(params, dtype=np.float64)
        return agent_objectives(self.mdp, params.reshape(self.param_shape) if params.ndim == 1 else params, self.tau)

    def global_objectives(self, params: np.ndarray) -> np.ndarray:
        """
        :param params: logits ``(B, S·A)``
        :return: ``J(θ)`` of each, ``(B,)``, evaluated in chunks that bound the ``(chunk, S, S)`` memory (per-agent
            transitions: ``(chunk·N, S, A, S)`` kernels)
        """
        mdp = self.mdp
        theta = np.asarray(params).reshape(-1, *self.param_shape)
        per_params = mdp.n_states**2 if mdp.shared_transitions else mdp.n_agents * mdp.n_actions * mdp.n_states**2
        chunk = max(1, 2**22 // per_params)
        with single_threaded_torch():
            return np.concatenate([global_objective(mdp, theta[i : i + chunk], self.tau) for i in range(0, len(theta), chunk)])

    def gradient_oracle(self, truncation: int | None = None) -> GradientOracle:
        """
        :param truncation: if given, the exact expectation of the ``K``-truncated GPOMDP estimator
            (truncation bias only, no noise) instead of the true gradient
        :return: ``grad_fn(params (N, S·A), step) -> (N, S·A)``
        """
        mdp, tau = self.mdp, self.tau

        def grad_fn(params: np.ndarray, step: int) -> np.ndarray:
            theta = params.reshape(mdp.n_agents, mdp.n_states, mdp.n_actions)
            if truncation is None:
                grads = agent_gradients(mdp, theta, tau)
            else:
                grads = truncated_policy_gradient(mdp, theta, truncation, tau)
            return grads.reshape(params.shape)

        return grad_fn

    def optimum(self) -> Optimum:
        """``J*``: see :func:`reference_objective_of`."""
        return Optimum(reference_objective_of(self.mdp, self.tau))

    def estimator(
        self, horizon: int, n_trajectories: int, baseline: Baseline = "leave_one_out", seed: int | None = 0
    ) -> GPOMDPEstimator:
        """The truncated GPOMDP estimator (:class:`~sb3_fedpg.tabular.sampled.GPOMDPEstimator`) at this ``τ``."""
        return GPOMDPEstimator(self.mdp, horizon, n_trajectories, self.tau, baseline, seed)


def _fedpg(local_steps: int, learning_rate: float, correction: bool, reuse_anchor: bool, server_learning_rate: float) -> FedPG:
    # this module's `fedpg_round`, looked up per call: the round stays patchable here (tests spy on it)
    return FedPG(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate, round_fn=fedpg_round)


def run_rounds(
    mdp: FederatedTabularMDP,
    one_round: OneRound,
    n_rounds: int,
    tau: float = 0.0,
    theta0: np.ndarray | None = None,
    n_samples: Callable[[], int] | None = None,
    config: dict | None = None,
    reference_objective: float | None = None,
) -> TabularRunResult:
    """
    Run ``n_rounds`` rounds of any federated algorithm and evaluate every global iterate exactly
    (:func:`sb3_fedpg.groundtruth.runs.run_rounds`).

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
    truth = TabularGroundTruth(mdp, tau)
    return shared.run_rounds(truth, one_round, n_rounds, theta0, n_samples, config, reference_objective)


def federated_run(
    mdp: FederatedTabularMDP,
    grad_fn: GradientOracle,
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
    algorithm = _fedpg(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate)
    truth = TabularGroundTruth(mdp, tau)
    one_round = algorithm.rounds(mdp.n_agents, grad_fn)
    return shared.run_rounds(truth, one_round, n_rounds, theta0, n_samples, config, reference_objective, algorithm.hint)


def exact_gradient_oracle(mdp: FederatedTabularMDP, tau: float = 0.0, horizon: int | None = None) -> GradientOracle:
    """
    Exact per-agent gradients as a fedmath gradient oracle (:meth:`TabularGroundTruth.gradient_oracle`).

    :param mdp: the federated MDP
    :param tau: entropy temperature
    :param horizon: if given, the exact expectation of the ``K``-truncated GPOMDP estimator
        (truncation bias only, no noise) instead of the true gradient
    :return: ``grad_fn(params (N, S·A), step) -> (N, S·A)``
    """
    return TabularGroundTruth(mdp, tau).gradient_oracle(horizon)


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
    algorithm = _fedpg(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate)
    truth = TabularGroundTruth(mdp, tau)
    return shared.exact_run(truth, algorithm, n_rounds, theta0, truncation, reference_objective)


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
    algorithm = _fedpg(local_steps, learning_rate, correction, reuse_anchor, server_learning_rate)
    truth = TabularGroundTruth(mdp, tau)
    return shared.sampled_run(truth, algorithm, n_rounds, horizon, n_trajectories, baseline, seed, theta0, reference_objective)


# ---------------------------------------------------------------- FedSVRPG-M
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
    FedSVRPG-M (:class:`~sb3_fedpg.groundtruth.runs.FedSVRPGM`) with any oracle.

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
    algorithm = FedSVRPGM(local_steps, learning_rate, momentum_coef, server_learning_rate)
    truth = TabularGroundTruth(mdp, tau)
    one_round = algorithm.rounds(mdp.n_agents, make_oracle)
    return shared.run_rounds(truth, one_round, n_rounds, theta0, n_samples, config, reference_objective, algorithm.hint)


def exact_svrpgm_oracle(mdp: FederatedTabularMDP, tau: float = 0.0, horizon: int | None = None) -> MomentumOracleFactory:
    """
    FedSVRPG-M's oracle with exact gradients (:func:`sb3_fedpg.groundtruth.runs.exact_svrpgm_oracle`).

    :param mdp: the federated MDP
    :param tau: entropy temperature
    :param horizon: if given, the exact expectation of the ``K``-truncated GPOMDP estimator instead
    :return: ``make_oracle(θ̄_{r−1})``
    """
    return shared.exact_svrpgm_oracle(exact_gradient_oracle(mdp, tau, horizon), mdp.n_agents)


def sampled_svrpgm_oracle(estimator: GPOMDPEstimator, max_importance_weight: float | None = None) -> MomentumOracleFactory:
    """
    FedSVRPG-M's oracle with truncated GPOMDP gradients and the exact importance weights of the softmax policies
    (:func:`sb3_fedpg.groundtruth.runs.sampled_svrpgm_oracle`).

    :param estimator: the GPOMDP estimator (its sampling stream and sample count)
    :param max_importance_weight: truncate the weights from above (``None``: the paper's exact weights)
    :return: ``make_oracle(θ̄_{r−1})``
    """
    return shared.sampled_svrpgm_oracle(estimator, estimator.mdp.n_agents, max_importance_weight)


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
    algorithm = FedSVRPGM(local_steps, learning_rate, momentum_coef, server_learning_rate)
    truth = TabularGroundTruth(mdp, tau)
    return shared.exact_run(truth, algorithm, n_rounds, theta0, truncation, reference_objective)


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
    algorithm = FedSVRPGM(local_steps, learning_rate, momentum_coef, server_learning_rate, max_importance_weight)
    truth = TabularGroundTruth(mdp, tau)
    return shared.sampled_run(truth, algorithm, n_rounds, horizon, n_trajectories, baseline, seed, theta0, reference_objective)

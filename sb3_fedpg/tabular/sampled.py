"""
Truncated GPOMDP gradient estimates on federated tabular MDPs, vectorised in NumPy.

All agents and all their trajectories advance together, one time step per NumPy call;
the only Python loop is over the ``K`` time steps.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sb3_fedpg.groundtruth.protocol import Baseline, GPOMDPSampler
from sb3_fedpg.tabular.exact import log_softmax_policy
from sb3_fedpg.tabular.mdp import FederatedTabularMDP


class Trajectories(NamedTuple):
    """
    ``M`` trajectories of ``K`` steps for each of ``N`` agents (time-major).

    :ivar states: visited states ``s_h``, ``(K, N, M)``
    :ivar actions: actions ``a_h``, ``(K, N, M)``
    :ivar rewards: the agents' own rewards ``R_i(s_h, a_h)`` (not the soft rewards), ``(K, N, M)``
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray


class GPOMDPEstimator(GPOMDPSampler):
    """
    The paper's truncated GPOMDP estimator, one independent batch per agent per call.

    For agent ``i`` with parameters ``θ_i``: ``M`` trajectories start from ``ρ``, run
    ``K`` steps under ``π_{θ_i}`` in agent ``i``'s MDP (its own ``P_i`` if transitions are per-agent), and

        ĝ_i = (1/M) Σ_m Σ_{h<K} ∇log π(a_h|s_h) (Σ_{k=h}^{K−1} γ^k r_k − b_h).

    With ``τ > 0`` the rewards are the soft rewards ``r − τ log π(a|s)``, which makes ĝ an
    unbiased (up to truncation) estimate of the entropy-regularised gradient (the extra
    ``−τ ∇log π`` term has zero mean and is dropped).

    Baseline: ``"leave_one_out"`` (default) uses for trajectory ``m`` the mean over the other
    ``M − 1`` trajectories of the same agent's reward-to-go at step ``h``. It is independent
    of trajectory ``m``, so the estimator stays unbiased, and it removes most of the variance
    due to the reward level. ``"none"`` is the textbook estimator. With ``M = 1`` no
    baseline is used.

    The expectation of ĝ_i is :func:`sb3_fedpg.tabular.exact.truncated_policy_gradient`.

    :param mdp: the federated MDP
    :param horizon: truncation ``K``
    :param n_trajectories: ``M`` per agent per call
    :param tau: entropy temperature
    :param baseline: ``"leave_one_out"`` or ``"none"``
    :param seed: seed (or ``np.random.Generator``) of the sampling stream
    """

    def __init__(
        self,
        mdp: FederatedTabularMDP,
        horizon: int,
        n_trajectories: int,
        tau: float = 0.0,
        baseline: Baseline = "leave_one_out",
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if tau < 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        super().__init__(mdp.gamma, horizon, n_trajectories, baseline, seed)
        self.mdp = mdp
        self.tau = tau
        self._cum_transitions = np.cumsum(mdp.transitions, -1)
        self._cum_rho = np.cumsum(mdp.initial_distribution)

    def _theta(self, theta: np.ndarray) -> np.ndarray:
        mdp = self.mdp
        return np.asarray(theta, dtype=np.float64).reshape(mdp.n_agents, mdp.n_states, mdp.n_actions)

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        """
        One fresh batch per agent.

        :param theta: per-agent logits ``(N, S, A)`` or ``(N, S·A)``
        :return: gradient estimates of the same shape
        """
        return self.gradient(theta, self.sample(theta)).reshape(np.shape(theta))

    def sample(self, theta: np.ndarray) -> Trajectories:
        """
        ``M`` fresh trajectories per agent of ``K`` steps from ``ρ`` under ``π_θ`` (counted in :attr:`n_samples`).

        :param theta: per-agent logits ``(N, S, A)`` or ``(N, S·A)``
        :return: the trajectories
        """
        mdp = self.mdp
        theta = self._theta(theta)
        n, m, k, n_actions = mdp.n_agents, self.n_trajectories, self.horizon, mdp.n_actions
        agent = np.arange(n)[:, None]
        last_state = mdp.n_states - 1
        # searchsorted-style sampling by counting cumulative probabilities below a uniform
        states = np.minimum((self._cum_rho < self.rng.random((n, m, 1))).sum(-1), last_state)
        visited = np.empty((k, n, m), dtype=np.int64)
        actions = np.empty((k, n, m), dtype=np.int64)
        rewards = np.empty((k, n, m))
        for h in range(k):
            p = np.exp(log_softmax_policy(theta[agent, states]))
            a = np.minimum((np.cumsum(p, -1) < self.rng.random((n, m, 1))).sum(-1), n_actions - 1)
            visited[h], actions[h], rewards[h] = states, a, mdp.rewards[agent, states, a]
            cum = self._cum_transitions[states, a] if mdp.shared_transitions else self._cum_transitions[agent, states, a]
            states = np.minimum((cum < self.rng.random((n, m, 1))).sum(-1), last_state)
        self.n_samples += n * m * k
        return Trajectories(visited, actions, rewards)

    def log_likelihood(self, theta: np.ndarray, trajectories: Trajectories) -> np.ndarray:
        """
        :param theta: per-agent logits ``(N, S, A)`` or ``(N, S·A)``
        :param trajectories: trajectories (sampled under any parameters)
        :return: ``log π_θ(a_h|s_h)`` of every step, ``(K, N, M)`` (the trajectory's log-likelihood up to the
            transition terms, which do not depend on ``θ``)
        """
        theta = self._theta(theta)
        log_p = log_softmax_policy(theta[np.arange(self.mdp.n_agents)[:, None], trajectories.states])
        return np.take_along_axis(log_p, trajectories.actions[..., None], -1)[..., 0]

    def gradient(self, theta: np.ndarray, trajectories: Trajectories, weights: np.ndarray | None = None) -> np.ndarray:
        """
        The GPOMDP estimate at ``θ`` from given trajectories, optionally with a weight per trajectory.

        With the trajectories sampled under ``θ`` and no weights this is the estimator of :meth:`__call__`. With
        trajectories sampled under other parameters ``θ'`` and ``weights`` the importance weights
        ``w(τ_m | θ, θ') = p(τ_m|θ) / p(τ_m|θ')`` (:func:`~sb3_fedpg.common.fedmath.importance_weights` of
        :meth:`log_likelihood`), it is ``(1/M) Σ_m w_m ĝ(θ; τ_m)``, whose expectation is again the estimator's at ``θ``
        (the leave-one-out baseline of ``τ_m`` is independent of ``τ_m``, so the weighted estimate stays unbiased). The
        soft rewards (``τ > 0``) and the scores are those of ``θ``.

        :param theta: per-agent logits ``(N, S, A)`` or ``(N, S·A)``
        :param trajectories: the trajectories
        :param weights: one weight per trajectory, ``(N, M)`` (``None``: 1)
        :return: gradient estimates ``(N, S·A)``
        """
        mdp = self.mdp
        theta = self._theta(theta)
        n, m, n_actions = mdp.n_agents, self.n_trajectories, mdp.n_actions
        agent = np.arange(n)[:, None]
        visited, actions = trajectories.states, trajectories.actions
        log_p = log_softmax_policy(theta[agent, visited])
        probs = np.exp(log_p)
        rewards = trajectories.rewards
        if self.tau > 0:
            rewards = rewards - self.tau * np.take_along_axis(log_p, actions[..., None], -1)[..., 0]
        to_go = self.rewards_to_go(rewards)
        if weights is not None:
            to_go = to_go * weights[None]
        # ∇_θ log π(a|s) = e_{s,a} − e_s ⊗ π(·|s): scatter w·(onehot(a) − π) into row s
        score = -probs
        np.put_along_axis(score, actions[..., None], np.take_along_axis(score, actions[..., None], -1) + 1.0, -1)
        contrib = to_go[..., None] * score
        rows = (agent * mdp.n_states + visited)[..., None] * n_actions + np.arange(n_actions)
        grad = np.bincount(rows.ravel(), weights=contrib.ravel(), minlength=n * mdp.n_params) / m
        return grad.reshape(n, mdp.n_params)

"""
Truncated GPOMDP gradient estimates on federated tabular MDPs, vectorised in NumPy.

All agents and all their trajectories advance together, one time step per NumPy call;
the only Python loop is over the ``K`` time steps.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sb3_fedpg.tabular.exact import log_softmax_policy
from sb3_fedpg.tabular.mdp import FederatedTabularMDP

Baseline = Literal["none", "leave_one_out"]


class GPOMDPEstimator:
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
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        if n_trajectories < 1:
            raise ValueError(f"n_trajectories must be at least 1, got {n_trajectories}")
        if tau < 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        if baseline not in ("none", "leave_one_out"):
            raise ValueError(f"baseline must be 'none' or 'leave_one_out', got {baseline!r}")
        self.mdp = mdp
        self.horizon = horizon
        self.n_trajectories = n_trajectories
        self.tau = tau
        self.baseline = baseline
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._cum_transitions = np.cumsum(mdp.transitions, -1)
        self._cum_rho = np.cumsum(mdp.initial_distribution)
        self._discounts = mdp.gamma ** np.arange(horizon)
        self.n_samples = 0  # environment steps simulated so far, all agents together

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        """
        One fresh batch per agent.

        :param theta: per-agent logits ``(N, S, A)`` or ``(N, S·A)``
        :return: gradient estimates of the same shape
        """
        mdp = self.mdp
        shape = np.shape(theta)
        theta = np.asarray(theta, dtype=np.float64).reshape(mdp.n_agents, mdp.n_states, mdp.n_actions)
        n, m, k, n_actions = mdp.n_agents, self.n_trajectories, self.horizon, mdp.n_actions
        agent = np.arange(n)[:, None]
        last_state = mdp.n_states - 1
        # searchsorted-style sampling by counting cumulative probabilities below a uniform
        states = np.minimum((self._cum_rho < self.rng.random((n, m, 1))).sum(-1), last_state)
        visited = np.empty((k, n, m), dtype=np.int64)
        actions = np.empty((k, n, m), dtype=np.int64)
        probs = np.empty((k, n, m, n_actions))
        rewards = np.empty((k, n, m))
        for h in range(k):
            log_p = log_softmax_policy(theta[agent, states])
            p = np.exp(log_p)
            a = np.minimum((np.cumsum(p, -1) < self.rng.random((n, m, 1))).sum(-1), n_actions - 1)
            r = mdp.rewards[agent, states, a]
            if self.tau > 0:
                r = r - self.tau * np.take_along_axis(log_p, a[..., None], -1)[..., 0]
            visited[h], actions[h], probs[h], rewards[h] = states, a, p, r
            cum = self._cum_transitions[states, a] if mdp.shared_transitions else self._cum_transitions[agent, states, a]
            states = np.minimum((cum < self.rng.random((n, m, 1))).sum(-1), last_state)
        self.n_samples += n * m * k
        discounted = rewards * self._discounts[:, None, None]
        to_go = np.cumsum(discounted[::-1], 0)[::-1]  # Σ_{k'≥h} γ^{k'} r_{k'}
        if self.baseline == "leave_one_out" and m > 1:
            to_go = to_go - (to_go.sum(-1, keepdims=True) - to_go) / (m - 1)
        # ∇_θ log π(a|s) = e_{s,a} − e_s ⊗ π(·|s): scatter w·(onehot(a) − π) into row s
        score = -probs
        np.put_along_axis(score, actions[..., None], np.take_along_axis(score, actions[..., None], -1) + 1.0, -1)
        contrib = to_go[..., None] * score
        rows = (agent * mdp.n_states + visited)[..., None] * n_actions + np.arange(n_actions)
        grad = np.bincount(rows.ravel(), weights=contrib.ravel(), minlength=n * mdp.n_params) / m
        return grad.reshape(shape)

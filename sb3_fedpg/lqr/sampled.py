"""
Truncated GPOMDP gradient estimates for the linear-Gaussian LQR policy, vectorised in NumPy.

All agents and all their trajectories advance together, one time step per NumPy call; the
only Python loop is over the ``K`` time steps (as in :mod:`sb3_fedpg.tabular.sampled`).
"""

from __future__ import annotations

import numpy as np

from sb3_fedpg.groundtruth.protocol import Baseline, GPOMDPSampler
from sb3_fedpg.lqr.exact import UnstableGainError
from sb3_fedpg.lqr.problem import FederatedLQR


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


class LQRGPOMDPEstimator(GPOMDPSampler):
    """
    The paper's truncated GPOMDP estimator for ``π_K(u|x) = N(−K x, σ² I)``, one batch per agent per call.

    For agent ``i`` with gain ``K_i``: ``M`` trajectories start from ``x_0 ~ N(0, Σ0)``, run
    ``K`` steps of ``x' = A x + B u + w`` with ``u = −K_i x + σ ε``, earn ``r = −(xᵀQ_i x + uᵀR_i u)``, and

        ĝ_i = (1/M) Σ_m Σ_{h<K} ∇_K log π(u_h|x_h) (Σ_{k=h}^{K−1} γ^k r_k − b_h),
        ∇_K log π(u|x) = −(u + K x) xᵀ / σ² = −ε xᵀ / σ.

    ``ĝ_i`` estimates ``−∇C_i^σ(K_i)``, the ascent direction of the stochastic policy's return,
    up to a truncation bias that vanishes like ``γ^K``. The stochastic policy's cost ``C_i^σ`` has the
    same gradient formula as ``C_i`` with the exploration noise ``σ² B Bᵀ`` added to the process noise
    (:func:`sb3_fedpg.lqr.exact.agent_gradients` with ``exploration_std=σ``); its minimiser over the
    mean cost is the same ``K*``.

    Baseline: ``"leave_one_out"`` (default) subtracts from trajectory ``m``'s reward-to-go at step
    ``h`` the mean over the agent's other ``M − 1`` trajectories (unbiased; as in the tabular estimator);
    ``"none"`` is the textbook estimator.

    Guard: a gain with ``ρ(√γ(A − B K)) ≥ 1`` raises :class:`~sb3_fedpg.lqr.exact.UnstableGainError`
    before anything is simulated (its cost is infinite; the rollouts would explode).

    :param problem: the federated LQR
    :param horizon: truncation ``K``
    :param n_trajectories: ``M`` per agent per call
    :param exploration_std: ``σ > 0``
    :param baseline: ``"leave_one_out"`` or ``"none"``
    :param seed: seed (or ``np.random.Generator``) of the sampling stream
    """

    def __init__(
        self,
        problem: FederatedLQR,
        horizon: int,
        n_trajectories: int,
        exploration_std: float = 0.5,
        baseline: Baseline = "leave_one_out",
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not exploration_std > 0:
            raise ValueError(f"exploration_std must be positive, got {exploration_std}")
        super().__init__(problem.gamma, horizon, n_trajectories, baseline, seed)
        self.problem = problem
        self.exploration_std = float(exploration_std)
        self._x0_factor = _psd_sqrt(problem.initial_covariance)
        assert problem.noise_covariance is not None  # FederatedLQR.__post_init__ stores zeros for None
        self._noise_factor = _psd_sqrt(problem.noise_covariance) if np.any(problem.noise_covariance != 0) else None

    def __call__(self, params: np.ndarray) -> np.ndarray:
        """
        One fresh batch per agent.

        :param params: per-agent gains ``(N, n_u, n_x)`` or flattened ``(N, n_u·n_x)``
        :return: ascent directions of the same shape
        """
        p = self.problem
        shape = np.shape(params)
        K = np.asarray(params, dtype=np.float64).reshape(p.n_agents, p.n_inputs, p.n_states)
        radius = np.asarray(p.spectral_radius(K))  # K is a stack: an array already
        if np.any(radius >= 1):
            bad = np.flatnonzero(radius >= 1).tolist()
            raise UnstableGainError(
                f"agent(s) {bad}: the gain destabilises the closed loop (ρ(√γ(A − BK)) = "
                f"{np.round(radius[radius >= 1], 4).tolist()} ≥ 1); use a smaller learning rate"
            )
        n, m, k, sigma = p.n_agents, self.n_trajectories, self.horizon, self.exploration_std
        Kt, At, Bt = K.swapaxes(-1, -2), p.A.T, p.B.T
        x = self.rng.standard_normal((n, m, p.n_states)) @ self._x0_factor.T
        states = np.empty((k, n, m, p.n_states))
        noises = np.empty((k, n, m, p.n_inputs))
        rewards = np.empty((k, n, m))
        for h in range(k):
            eps = self.rng.standard_normal((n, m, p.n_inputs))
            u = -(x @ Kt) + sigma * eps
            rewards[h] = -(np.einsum("nmi,nmi->nm", x @ p.Q, x) + np.einsum("nmi,nmi->nm", u @ p.R, u))
            states[h], noises[h] = x, eps
            x = x @ At + u @ Bt
            if self._noise_factor is not None:
                x = x + self.rng.standard_normal(x.shape) @ self._noise_factor.T
        self.n_samples += n * m * k
        to_go = self.rewards_to_go(rewards)
        # Σ_h (−ε_h x_hᵀ / σ) · to_go_h, averaged over trajectories
        grad = -np.einsum("hnmu,hnmx,hnm->nux", noises, states, to_go, optimize=True) / (sigma * m)
        return grad.reshape(shape)

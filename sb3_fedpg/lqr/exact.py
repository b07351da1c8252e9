"""
Exact costs, gradients and ground truth of federated LQR (Fazel, Ge, Kakade, Mesbahi 2018).

For a gain ``K`` with ``A_K = A − B K`` and the discount ``γ`` (see :mod:`sb3_fedpg.lqr.problem`):

* value matrix ``P_K = Q + Kᵀ R K + γ A_Kᵀ P_K A_K`` (a discrete Lyapunov equation);
* discounted state covariance ``Σ_K = Σ_eff + γ A_K Σ_K A_Kᵀ`` with
  ``Σ_eff = Σ0 + γ/(1−γ)(W + σ² B Bᵀ)``;
* cost ``C(K) = tr(P_K Σ_eff) + σ² tr(R)/(1 − γ)``;
* gradient ``∇C(K) = 2 [(R + γ Bᵀ P_K B) K − γ Bᵀ P_K A] Σ_K``
  (Fazel et al.'s formula for the undiscounted LQR of ``(√γ A, √γ B)``).

Both Lyapunov equations are solved for all agents (or all gains) at once, through the
Kronecker form ``(I − γ A_K ⊗ A_K) vec(X) = vec(rhs)`` batched in one ``np.linalg.solve``;
for large ``n_x`` (``> 12``) one ``scipy.linalg.solve_discrete_lyapunov`` per gain.
A gain with ``ρ(√γ A_K) ≥ 1`` has infinite cost: costs return ``inf``, gradients raise
:class:`UnstableGainError` (never NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from sb3_fedpg.groundtruth.protocol import InvalidParamsError
from sb3_fedpg.lqr.problem import FederatedLQR

#: largest ``n_x`` for the batched Kronecker solve (its systems are ``n_x² × n_x²``)
KRONECKER_MAX_STATES = 12


class UnstableGainError(InvalidParamsError):
    """A gain destabilises the (discounted) closed loop: its cost is infinite, its gradient undefined."""


def _gains(problem: FederatedLQR, K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    shape = (problem.n_inputs, problem.n_states)
    if K.shape[-2:] != shape:
        if K.shape[-1:] == (problem.n_params,):
            return K.reshape(*K.shape[:-1], *shape)
        raise ValueError(f"gains must have shape (..., {shape[0]}, {shape[1]}) or (..., {problem.n_params}), got {K.shape}")
    return K


def solve_lyapunov(closed: np.ndarray, rhs: np.ndarray, gamma: float, transpose: bool = False) -> np.ndarray:
    """
    Solve ``X = rhs + γ Fᵀ X F`` (``transpose=True``) or ``X = rhs + γ F X Fᵀ`` for a stack of ``F``.

    :param closed: closed-loop matrices ``F`` of shape ``(b, n, n)`` (all with ``ρ(√γ F) < 1``)
    :param rhs: right-hand sides ``(b, n, n)`` (or ``(n, n)``, broadcast)
    :param gamma: discount ``γ``
    :param transpose: which of the two equations
    :return: ``X`` of shape ``(b, n, n)``, symmetrised
    """
    closed = np.asarray(closed, dtype=np.float64)
    b, n, _ = closed.shape
    rhs = np.broadcast_to(rhs, (b, n, n))
    F = closed.swapaxes(-1, -2) if transpose else closed
    if n <= KRONECKER_MAX_STATES:
        # row-major vec: vec(F X Fᵀ) = (F ⊗ F) vec(X)
        kron = (F[:, :, None, :, None] * F[:, None, :, None, :]).reshape(b, n * n, n * n)
        system = np.eye(n * n) - gamma * kron
        X = np.linalg.solve(system, rhs.reshape(b, n * n, 1)).reshape(b, n, n)
    else:
        X = np.stack([scipy.linalg.solve_discrete_lyapunov(np.sqrt(gamma) * F[j], rhs[j]) for j in range(b)])
    return 0.5 * (X + X.swapaxes(-1, -2))


@dataclass
class GainEvaluation:
    """
    Exact quantities of per-agent gains ``K_i`` under per-agent costs ``(Q_i, R_i)``.

    :param gains: ``(b, n_u, n_x)``
    :param stable: ``(b,)`` whether ``ρ(√γ(A − B K_i)) < 1``
    :param costs: ``(b,)`` ``C_i(K_i)`` (``inf`` where unstable)
    :param value: ``P_i`` of shape ``(b, n_x, n_x)`` (NaN where unstable)
    :param covariance: ``Σ_{K_i}`` of shape ``(b, n_x, n_x)`` (NaN where unstable)
    """

    gains: np.ndarray
    stable: np.ndarray
    costs: np.ndarray
    value: np.ndarray
    covariance: np.ndarray


def _value_matrices(
    problem: FederatedLQR, closed: np.ndarray, K: np.ndarray, rhs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """
    ``P_K`` of every gain and which gains are stable (``P_K = NaN`` where not).

    Fast path: solve all Lyapunov equations at once; if every solution is finite and positive
    definite, every gain is stable (``xᵀP x`` is then a strict Lyapunov function of ``√γ A_K``,
    since the right-hand side ``Q + KᵀRK`` is positive definite), and conversely a stable gain
    always has a positive definite solution. Otherwise the spectral radii decide.
    """
    try:
        value = solve_lyapunov(closed, rhs, problem.gamma, transpose=True)
        if np.all(np.isfinite(value)):
            np.linalg.cholesky(value)
            return value, np.ones(len(K), dtype=bool)
    except np.linalg.LinAlgError:
        pass
    stable = np.asarray(problem.spectral_radius(K)) < 1.0  # K is a stack: an array already
    value = np.full(closed.shape, np.nan)
    if stable.any():
        value[stable] = solve_lyapunov(closed[stable], rhs[stable], problem.gamma, transpose=True)
    return value, stable


def evaluate(
    problem: FederatedLQR,
    K: np.ndarray,
    Q: np.ndarray,
    R: np.ndarray,
    exploration_std: float = 0.0,
    with_covariance: bool = True,
) -> GainEvaluation:
    """
    Costs (and the matrices of the gradient) of a stack of gains under a stack of costs.

    :param problem: the federated LQR (dynamics, ``Σ0``, ``W``, ``γ``)
    :param K: gains ``(b, n_u, n_x)``
    :param Q: state costs ``(b, n_x, n_x)`` (or one, broadcast)
    :param R: input costs ``(b, n_u, n_u)`` (or one, broadcast)
    :param exploration_std: ``σ`` of ``u = −K x + σ ε`` (adds ``σ² B Bᵀ`` noise and ``σ² tr R`` cost)
    :param with_covariance: also solve for ``Σ_K`` (needed by gradients only)
    :return: the :class:`GainEvaluation`
    """
    K = _gains(problem, K)
    b, n = K.shape[0], problem.n_states
    Q = np.broadcast_to(Q, (b, n, n))
    R = np.broadcast_to(R, (b, problem.n_inputs, problem.n_inputs))
    closed = problem.A - problem.B @ K
    KtRK = K.swapaxes(-1, -2) @ R @ K
    sigma_eff = problem.effective_covariance(exploration_std)
    value, stable = _value_matrices(problem, closed, K, Q + KtRK)
    costs = np.full(b, np.inf)
    covariance = np.full((b, n, n), np.nan)
    if stable.any():
        costs[stable] = np.einsum("bij,ji->b", value[stable], sigma_eff)
        if exploration_std > 0:
            costs[stable] += exploration_std**2 * np.trace(R[stable], axis1=-2, axis2=-1) / (1.0 - problem.gamma)
        if with_covariance:
            covariance[stable] = solve_lyapunov(closed[stable], sigma_eff, problem.gamma, transpose=False)
    return GainEvaluation(K, stable, costs, value, covariance)


def _per_agent(problem: FederatedLQR, K: np.ndarray) -> np.ndarray:
    K = _gains(problem, K)
    if K.ndim == 2:
        K = np.broadcast_to(K, (problem.n_agents, *K.shape))
    if K.shape[0] != problem.n_agents:
        raise ValueError(f"need one gain per agent ({problem.n_agents}), got {K.shape[0]}")
    return K


def agent_costs(problem: FederatedLQR, K: np.ndarray, exploration_std: float = 0.0) -> np.ndarray:
    """
    ``C_i(K_i)`` for every agent (``inf`` where ``K_i`` destabilises).

    :param problem: the federated LQR
    :param K: one gain ``(n_u, n_x)`` for all agents, or one per agent ``(N, n_u, n_x)`` (or flattened)
    :param exploration_std: ``σ`` of the linear-Gaussian policy (0: deterministic ``u = −K x``)
    :return: ``(N,)``
    """
    K = _per_agent(problem, K)
    return evaluate(problem, K, problem.Q, problem.R, exploration_std, with_covariance=False).costs


def _gradient(problem: FederatedLQR, ev: GainEvaluation, R: np.ndarray, what: str) -> np.ndarray:
    if not ev.stable.all():
        bad = np.flatnonzero(~ev.stable).tolist()
        radius = problem.spectral_radius(ev.gains[~ev.stable])
        raise UnstableGainError(
            f"{what} {bad}: the gain destabilises the closed loop (ρ(√γ(A − BK)) = {np.round(radius, 4).tolist()} ≥ 1), "
            "its cost is infinite and its gradient undefined; use a smaller learning rate"
        )
    gamma, A, B, P, K = problem.gamma, problem.A, problem.B, ev.value, ev.gains
    R = np.broadcast_to(R, (len(K), *R.shape[-2:]))
    BtP = B.T @ P
    E = (R + gamma * BtP @ B) @ K - gamma * BtP @ A
    return 2.0 * E @ ev.covariance


def agent_gradients(problem: FederatedLQR, K: np.ndarray, exploration_std: float = 0.0) -> np.ndarray:
    """
    ``∇C_i(K_i)`` for every agent: ``2[(R_i + γBᵀP_iB)K_i − γBᵀP_iA] Σ_{K_i}``.

    :param problem: the federated LQR
    :param K: one gain for all agents or one per agent (see :func:`agent_costs`)
    :param exploration_std: ``σ`` (changes ``Σ_K`` only)
    :return: ``(N, n_u, n_x)``
    :raises UnstableGainError: naming the agents whose gain destabilises the closed loop
    """
    K = _per_agent(problem, K)
    ev = evaluate(problem, K, problem.Q, problem.R, exploration_std)
    return _gradient(problem, ev, problem.R, "agent(s)")


def global_cost(problem: FederatedLQR, K: np.ndarray, exploration_std: float = 0.0) -> np.ndarray | float:
    """
    ``C̄(K) = (1/N) Σ_i C_i(K)``, the LQR cost of ``(Q̄, R̄)``, for one gain or a stack of gains.

    :param problem: the federated LQR
    :param K: ``(n_u, n_x)`` or ``(b, n_u, n_x)`` (or flattened)
    :param exploration_std: ``σ``
    :return: a float, or ``(b,)`` (``inf`` where unstable)
    """
    K = _gains(problem, K)
    single = K.ndim == 2
    stack = K.reshape(-1, problem.n_inputs, problem.n_states)
    costs = evaluate(problem, stack, problem.mean_Q, problem.mean_R, exploration_std, with_covariance=False).costs
    return float(costs[0]) if single else costs.reshape(K.shape[:-2])


def global_gradient(problem: FederatedLQR, K: np.ndarray) -> np.ndarray:
    """
    ``∇C̄(K) = (1/N) Σ_i ∇C_i(K)`` (the gradient of the ``(Q̄, R̄)`` LQR).

    :param problem: the federated LQR
    :param K: one gain ``(n_u, n_x)``
    :return: ``(n_u, n_x)``
    """
    K = _gains(problem, K)[None]
    ev = evaluate(problem, K, problem.mean_Q, problem.mean_R)
    return _gradient(problem, ev, problem.mean_R, "gain")[0]


def truncated_agent_gradients(problem: FederatedLQR, K: np.ndarray, horizon: int, exploration_std: float = 0.0) -> np.ndarray:
    """
    Exact gradients of the ``K``-step truncated costs ``C_i^T(K_i) = E[Σ_{t<T} γ^t c_i(x_t, u_t)]``.

    This is the expectation of the truncated GPOMDP estimator (:class:`~sb3_fedpg.lqr.sampled.LQRGPOMDPEstimator`,
    up to its sign): ``∇C^T = 2 Σ_{t<T} γ^t [(R + γBᵀP_{T−t−1}B)K − γBᵀP_{T−t−1}A] Σ_t`` with the
    ``k``-step value matrices ``P_0 = 0``, ``P_{k+1} = Q + KᵀRK + γA_KᵀP_kA_K`` and the state
    covariances ``Σ_0 = Σ0``, ``Σ_{t+1} = A_K Σ_t A_Kᵀ + W + σ²BBᵀ``. Defined for any gain
    (a finite sum), but only meaningful as an estimate of ``∇C_i`` for stable ones.

    :param problem: the federated LQR
    :param K: one gain for all agents or one per agent
    :param horizon: truncation ``T``
    :param exploration_std: ``σ``
    :return: ``(N, n_u, n_x)``
    """
    K = _per_agent(problem, K)
    gamma, A, B, Q, R = problem.gamma, problem.A, problem.B, problem.Q, problem.R
    closed = A - B @ K
    M = Q + K.swapaxes(-1, -2) @ R @ K
    noise = problem.noise_covariance + exploration_std**2 * B @ B.T
    values = [np.zeros_like(M)]
    for _ in range(horizon - 1):
        values.append(M + gamma * closed.swapaxes(-1, -2) @ values[-1] @ closed)
    sigma = np.broadcast_to(problem.initial_covariance, M.shape)
    grad = np.zeros_like(K)
    for t in range(horizon):
        P = values[horizon - t - 1]
        BtP = B.T @ P
        grad += gamma**t * ((R + gamma * BtP @ B) @ K - gamma * BtP @ A) @ sigma
        sigma = closed @ sigma @ closed.swapaxes(-1, -2) + noise
    return 2.0 * grad


@dataclass
class LQRSolution:
    """
    Ground truth of an LQR from the discrete algebraic Riccati equation.

    :param gain: optimal ``K*`` ``(n_u, n_x)``
    :param cost: ``C(K*)``
    :param value: Riccati solution ``P*``
    """

    gain: np.ndarray
    cost: float
    value: np.ndarray


def solve_riccati(problem: FederatedLQR, Q: np.ndarray, R: np.ndarray) -> LQRSolution:
    """
    The discounted LQR optimum for costs ``(Q, R)``: DARE of ``(√γ A, √γ B, Q, R)``.

    ``K* = (R + γBᵀP*B)⁻¹ γBᵀP*A`` is optimal for every ``Σ0 ≻ 0`` (and every noise level).

    :param problem: dynamics, ``Σ0``, ``W``, ``γ``
    :param Q: state cost
    :param R: input cost
    :return: the :class:`LQRSolution` (cost ``tr(P* Σ_eff)``)
    """
    a, b = np.sqrt(problem.gamma) * problem.A, np.sqrt(problem.gamma) * problem.B
    P = scipy.linalg.solve_discrete_are(a, b, Q, R)
    P = 0.5 * (P + P.T)
    K = np.linalg.solve(R + b.T @ P @ b, b.T @ P @ a)
    return LQRSolution(K, float(np.trace(P @ problem.effective_covariance())), P)


def optimal_gain(problem: FederatedLQR) -> LQRSolution:
    """
    Ground truth of the federation: the optimum of ``C̄``, i.e. the LQR of ``(Q̄, R̄)``.

    :param problem: the federated LQR
    :return: ``K*``, ``C̄(K*)`` and ``P*``
    """
    return solve_riccati(problem, problem.mean_Q, problem.mean_R)


def agent_optimal_gains(problem: FederatedLQR) -> np.ndarray:
    """
    Each agent's own optimum ``K_i* = argmin C_i`` (what local-only training would find).

    :param problem: the federated LQR
    :return: ``(N, n_u, n_x)``
    """
    return np.stack([solve_riccati(problem, q, r).gain for q, r in zip(problem.Q, problem.R, strict=True)])

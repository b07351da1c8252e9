"""
Federated linear-quadratic regulators: shared linear dynamics, per-agent quadratic costs.

Conventions (see ``docs/benchmarks/lqr.md``):

* dynamics ``x_{t+1} = A x_t + B u_t + w_t``, ``w_t ~ N(0, W)``, ``x_0 ~ N(0, Σ0)``;
* agent ``i`` pays ``c_i(x, u) = xᵀ Q_i x + uᵀ R_i u`` per step;
* a linear policy ``u = −K x`` (``K`` of shape ``(n_u, n_x)``), or the linear-Gaussian
  policy ``u = −K x + σ ε`` of the sampled mode;
* agent ``i``'s cost is the **discounted** sum ``C_i(K) = E[Σ_t γ^t c_i(x_t, u_t)]`` with
  ``0 < γ ≤ 1`` (``γ = 1`` only without process noise). Equivalently, the undiscounted LQR
  with ``(√γ A, √γ B)``: ``C_i`` is finite exactly when ``ρ(√γ (A − B K)) < 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg


def _spd(matrix: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {matrix.shape}")
    if not np.allclose(matrix, matrix.T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name} must be symmetric")
    if np.linalg.eigvalsh(matrix).min() <= 0:
        raise ValueError(f"{name} must be positive definite")
    return 0.5 * (matrix + matrix.T)


@dataclass(frozen=True)
class FederatedLQR:
    """
    ``N`` agents with shared dynamics ``(A, B)`` and their own costs ``(Q_i, R_i)``.

    The average cost ``C̄(K) = (1/N) Σ_i C_i(K)`` is the LQR cost of ``(Q̄, R̄)`` (the means),
    which is what gives exact ground truth (:func:`sb3_fedpg.lqr.exact.optimal_gain`).

    :param A: state matrix ``(n_x, n_x)``
    :param B: input matrix ``(n_x, n_u)``
    :param Q: per-agent state costs ``(N, n_x, n_x)``, symmetric positive definite
    :param R: per-agent input costs ``(N, n_u, n_u)``, symmetric positive definite
    :param initial_covariance: ``Σ0`` of ``x_0 ~ N(0, Σ0)``, positive definite
    :param noise_covariance: ``W`` of the process noise (zeros: deterministic dynamics)
    :param gamma: discount ``γ ∈ (0, 1]`` (``< 1`` when ``W ≠ 0``)
    :param initial_gain: a stabilising gain ``K0`` to start runs from (zeros if ``None``)
    """

    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    initial_covariance: np.ndarray
    noise_covariance: np.ndarray | None = None
    gamma: float = 1.0
    initial_gain: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        # private copies: they are made read-only below, which must not touch the caller's arrays
        A = np.array(self.A, dtype=np.float64)
        B = np.array(self.B, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square, got shape {A.shape}")
        if B.ndim != 2 or B.shape[0] != A.shape[0]:
            raise ValueError(f"B must have shape (n_x, n_u) = ({A.shape[0]}, n_u), got {B.shape}")
        n_x, n_u = B.shape
        Q = np.array(self.Q, dtype=np.float64)
        R = np.array(self.R, dtype=np.float64)
        if Q.ndim != 3 or Q.shape[1:] != (n_x, n_x):
            raise ValueError(f"Q must have shape (n_agents, {n_x}, {n_x}), got {Q.shape}")
        if R.ndim != 3 or R.shape[1:] != (n_u, n_u) or len(R) != len(Q):
            raise ValueError(f"R must have shape ({len(Q)}, {n_u}, {n_u}), got {R.shape}")
        Q = np.stack([_spd(q, f"Q[{i}]") for i, q in enumerate(Q)])
        R = np.stack([_spd(r, f"R[{i}]") for i, r in enumerate(R)])
        sigma0 = _spd(self.initial_covariance, "initial_covariance")
        if sigma0.shape != (n_x, n_x):
            raise ValueError(f"initial_covariance must have shape ({n_x}, {n_x}), got {sigma0.shape}")
        W = np.zeros((n_x, n_x)) if self.noise_covariance is None else np.array(self.noise_covariance, dtype=np.float64)
        if W.shape != (n_x, n_x) or not np.allclose(W, W.T) or np.linalg.eigvalsh(0.5 * (W + W.T)).min() < -1e-12:
            raise ValueError(f"noise_covariance must be a symmetric positive semi-definite ({n_x}, {n_x}) matrix")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.gamma == 1.0 and np.any(W != 0):
            raise ValueError("with process noise the undiscounted cost is infinite: use gamma < 1")
        K0 = np.zeros((n_u, n_x)) if self.initial_gain is None else np.array(self.initial_gain, dtype=np.float64)
        if K0.shape != (n_u, n_x):
            raise ValueError(f"initial_gain must have shape ({n_u}, {n_x}), got {K0.shape}")
        for name, value in (("A", A), ("B", B), ("Q", Q), ("R", R), ("initial_covariance", sigma0), ("W", W), ("K0", K0)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} has non-finite entries")
            value.setflags(write=False)
        for name, value in (
            ("A", A),
            ("B", B),
            ("Q", Q),
            ("R", R),
            ("initial_covariance", sigma0),
            ("noise_covariance", W),
            ("initial_gain", K0),
        ):
            object.__setattr__(self, name, value)
        if self.spectral_radius(K0) >= 1.0:
            radius = self.spectral_radius(K0)
            raise ValueError(f"initial_gain does not stabilise the discounted closed loop: ρ(√γ(A − B K0)) = {radius:.4g} ≥ 1")

    @property
    def n_agents(self) -> int:
        """Number of agents ``N``."""
        return int(self.Q.shape[0])

    @property
    def n_states(self) -> int:
        """State dimension ``n_x``."""
        return int(self.A.shape[0])

    @property
    def n_inputs(self) -> int:
        """Input dimension ``n_u``."""
        return int(self.B.shape[1])

    @property
    def n_params(self) -> int:
        """Size of the federated parameter vector ``vec(K)`` (row-major ``K.ravel()``)."""
        return self.n_inputs * self.n_states

    @property
    def mean_Q(self) -> np.ndarray:
        """``Q̄ = (1/N) Σ_i Q_i``."""
        return self.Q.mean(0)

    @property
    def mean_R(self) -> np.ndarray:
        """``R̄ = (1/N) Σ_i R_i``."""
        return self.R.mean(0)

    def effective_covariance(self, exploration_std: float = 0.0) -> np.ndarray:
        """
        ``Σ_eff = Σ0 + γ/(1 − γ) · (W + σ² B Bᵀ)``: the cost of every gain is ``tr(P_K Σ_eff)`` (+ a constant).

        :param exploration_std: ``σ`` of the linear-Gaussian policy ``u = −K x + σ ε``
        :return: ``(n_x, n_x)``
        """
        noise = self.noise_covariance + exploration_std**2 * self.B @ self.B.T
        if not np.any(noise != 0):
            return np.array(self.initial_covariance)
        if self.gamma >= 1.0:
            raise ValueError("with process or exploration noise the undiscounted cost is infinite: use gamma < 1")
        return self.initial_covariance + self.gamma / (1.0 - self.gamma) * noise

    def spectral_radius(self, K: np.ndarray) -> np.ndarray | float:
        """
        ``ρ(√γ (A − B K))`` for one gain ``(n_u, n_x)`` or a stack ``(..., n_u, n_x)``; ``< 1`` is stable.

        :param K: gain(s)
        :return: the spectral radius (array for a stack)
        """
        closed = np.sqrt(self.gamma) * (self.A - self.B @ np.asarray(K, dtype=np.float64))
        with np.errstate(all="ignore"):
            radius = np.abs(np.linalg.eigvals(closed)).max(-1)
        return (
            np.where(np.isfinite(radius), radius, np.inf)
            if np.ndim(radius)
            else float(radius if np.isfinite(radius) else np.inf)
        )

    def subset(self, agents: np.ndarray | list[int]) -> FederatedLQR:
        """
        The federation of only some agents (same dynamics).

        :param agents: agent indices
        :return: a new :class:`FederatedLQR`
        """
        idx = np.asarray(agents)
        return FederatedLQR(
            self.A,
            self.B,
            self.Q[idx],
            self.R[idx],
            self.initial_covariance,
            self.noise_covariance,
            self.gamma,
            self.initial_gain,
        )


def _skew_directions(rng: np.random.Generator, n_agents: int, n: int) -> np.ndarray:
    """Random skew-symmetric generators ``(N, n, n)`` with unit-scale entries, centred over agents (zero for one agent)."""
    G = rng.normal(size=(n_agents, n, n))
    S = (G - G.swapaxes(-1, -2)) / np.sqrt(2.0)
    return S - S.mean(0)


def _rotations(generators: np.ndarray) -> np.ndarray:
    """``expm`` of a stack of skew-symmetric matrices: rotations."""
    return np.stack([scipy.linalg.expm(g) for g in generators])


def _log_spaced_spd(rng: np.random.Generator, n: int, condition: float) -> np.ndarray:
    """A random SPD matrix with eigenvalues log-spaced in ``[1/√c, √c]`` and a random eigenbasis."""
    basis, _ = np.linalg.qr(rng.normal(size=(n, n)))
    values = np.geomspace(1.0 / np.sqrt(condition), np.sqrt(condition), n) if n > 1 else np.ones(1)
    return (basis * values) @ basis.T


def random_lqr(
    n_states: int = 4,
    n_inputs: int = 2,
    n_agents: int = 8,
    heterogeneity: float = 1.0,
    seed: int = 0,
    gamma: float = 0.9,
    spectral_radius: float = 0.8,
    cost_condition: float = 10.0,
    input_scale_spread: float = 0.5,
    noise_std: float = 0.0,
    initial_std: float = 1.0,
) -> FederatedLQR:
    """
    A random federated LQR whose agents differ in the **curvature** of their costs.

    * ``A`` Gaussian, rescaled to the given spectral radius; ``B`` Gaussian with entries of
      variance ``1/n_x``; ``Σ0 = initial_std² I``; ``W = noise_std² I``.
    * Base costs ``Q0`` (``n_x × n_x``) and ``R0`` (``n_u × n_u``): random eigenbases,
      eigenvalues log-spaced over a ratio ``cost_condition``.
    * Agent ``i`` sees them in its own rotated frame, and pays its own price for inputs:
      ``Q_i = U_i Q0 U_iᵀ``, ``R_i = exp(h · s · z_i) V_i R0 V_iᵀ`` with rotations
      ``U_i = exp(h Ω_i)``, ``V_i = exp(h Ψ_i)`` (``Ω_i``, ``Ψ_i`` random skew-symmetric
      generators with unit-scale entries, centred over agents), ``z_i`` standard normal
      (centred) and ``s = input_scale_spread``. The agents' costs have the *same spectrum*
      (so the same smoothness, which bounds a stable step size) but different principal
      directions — their curvature differs, not only their scale — so the mean of the
      agents' optimal gains is not the optimal gain of the mean cost. ``h = 0``: identical
      agents; a single agent always gets ``(Q0, R0)``. The random draws do not depend on ``h``
      (sweeps over ``h`` are nested), and ``A``, ``B``, ``Q0``, ``R0`` do not depend on ``N``.
    * ``K0 = 0`` when ``√γ · spectral_radius < 1`` (open-loop stable), otherwise the
      discounted LQR gain of ``(I, I)``, which stabilises any stabilisable pair (``B`` is
      Gaussian, so ``(A, B)`` is controllable with probability one; this is checked).

    :param n_states: ``n_x``
    :param n_inputs: ``n_u``
    :param n_agents: ``N``
    :param heterogeneity: ``h ≥ 0`` (0 = identical agents)
    :param seed: seed of every random draw
    :param gamma: discount ``γ``
    :param spectral_radius: ``ρ(A)``
    :param cost_condition: eigenvalue ratio of ``Q0`` and of ``R0`` (1: isotropic costs, rotations do nothing)
    :param input_scale_spread: ``s``, spread of the agents' log input prices at ``h = 1``
    :param noise_std: process noise standard deviation (``W = noise_std² I``)
    :param initial_std: ``Σ0 = initial_std² I``
    :return: the :class:`FederatedLQR`
    """
    if heterogeneity < 0:
        raise ValueError(f"heterogeneity must be >= 0 (0 = identical agents), got {heterogeneity}")
    if n_states < 1 or n_inputs < 1 or n_agents < 1:
        raise ValueError("n_states, n_inputs and n_agents must be >= 1")
    if spectral_radius <= 0 or cost_condition < 1:
        raise ValueError(f"need spectral_radius > 0 and cost_condition >= 1, got {spectral_radius} and {cost_condition}")
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_states, n_states))
    A *= spectral_radius / np.abs(np.linalg.eigvals(A)).max()
    B = rng.normal(size=(n_states, n_inputs)) / np.sqrt(n_states)
    Q0 = _log_spaced_spd(rng, n_states, cost_condition)
    R0 = _log_spaced_spd(rng, n_inputs, cost_condition)
    U = _rotations(heterogeneity * _skew_directions(rng, n_agents, n_states))
    V = _rotations(heterogeneity * _skew_directions(rng, n_agents, n_inputs))
    z = rng.normal(size=n_agents)
    z = z - z.mean()
    Q = U @ Q0 @ U.swapaxes(-1, -2)
    R = np.exp(heterogeneity * input_scale_spread * z)[:, None, None] * (V @ R0 @ V.swapaxes(-1, -2))
    Q = (Q + Q.swapaxes(-1, -2)) / 2
    R = (R + R.swapaxes(-1, -2)) / 2
    K0 = None
    if np.sqrt(gamma) * spectral_radius >= 1.0:
        ctrb = np.hstack([np.linalg.matrix_power(A, k) @ B for k in range(n_states)])
        if np.linalg.matrix_rank(ctrb) < n_states:  # pragma: no cover - probability zero
            raise ValueError(f"seed {seed} drew an uncontrollable (A, B); try another seed")
        a, b = np.sqrt(gamma) * A, np.sqrt(gamma) * B
        P = scipy.linalg.solve_discrete_are(a, b, np.eye(n_states), np.eye(n_inputs))
        K0 = np.linalg.solve(np.eye(n_inputs) + b.T @ P @ b, b.T @ P @ a)
    return FederatedLQR(
        A=A,
        B=B,
        Q=Q,
        R=R,
        initial_covariance=initial_std**2 * np.eye(n_states),
        noise_covariance=noise_std**2 * np.eye(n_states),
        gamma=gamma,
        initial_gain=K0,
    )

"""Exact LQR costs and gradients against finite differences, scipy and the Riccati ground truth."""

import numpy as np
import pytest
import scipy.linalg

from sb3_fedpg.lqr import (
    FederatedLQR,
    UnstableGainError,
    agent_costs,
    agent_gradients,
    agent_optimal_gains,
    global_cost,
    global_gradient,
    optimal_gain,
    random_lqr,
    solve_riccati,
)


def _gains_near_optimum(problem, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    K = optimal_gain(problem).gain
    return K + scale * rng.normal(size=(problem.n_agents, *K.shape)) / np.sqrt(K.size)


@pytest.mark.parametrize(("noise_std", "exploration_std"), [(0.0, 0.0), (0.3, 0.5)])
def test_gradient_matches_finite_differences(noise_std, exploration_std):
    problem = random_lqr(n_states=4, n_inputs=2, n_agents=3, heterogeneity=1.0, seed=3, noise_std=noise_std)
    K = _gains_near_optimum(problem)
    grad = agent_gradients(problem, K, exploration_std)
    eps = 1e-6
    fd = np.zeros_like(grad)
    for a in range(problem.n_inputs):
        for b in range(problem.n_states):
            E = np.zeros_like(K)
            E[:, a, b] = eps
            fd[:, a, b] = (agent_costs(problem, K + E, exploration_std) - agent_costs(problem, K - E, exploration_std)) / (
                2 * eps
            )
    rel = np.linalg.norm(fd - grad, axis=(1, 2)) / np.linalg.norm(grad, axis=(1, 2))
    assert rel.max() <= 1e-6, rel


def test_costs_match_scipy_lyapunov_and_simulation():
    problem = random_lqr(n_agents=2, seed=1, heterogeneity=1.0)
    K = _gains_near_optimum(problem)
    costs = agent_costs(problem, K)
    for i in range(problem.n_agents):
        F = np.sqrt(problem.gamma) * (problem.A - problem.B @ K[i])
        P = scipy.linalg.solve_discrete_lyapunov(F.T, problem.Q[i] + K[i].T @ problem.R[i] @ K[i])
        assert costs[i] == pytest.approx(np.trace(P @ problem.initial_covariance), rel=1e-10)
        # and the definition itself: Σ_t γ^t E[xᵀ(Q + KᵀRK)x] over x_{t+1} = (A − BK) x_t, E[x0 x0ᵀ] = Σ0
        sigma, total = problem.initial_covariance.copy(), 0.0
        for t in range(400):
            total += problem.gamma**t * np.trace((problem.Q[i] + K[i].T @ problem.R[i] @ K[i]) @ sigma)
            sigma = (problem.A - problem.B @ K[i]) @ sigma @ (problem.A - problem.B @ K[i]).T
        assert costs[i] == pytest.approx(total, rel=1e-10)


def test_large_state_dimension_uses_scipy_path_consistently():
    problem = random_lqr(n_states=14, n_inputs=3, n_agents=2, seed=0)
    K = _gains_near_optimum(problem, scale=0.1)
    F = np.sqrt(problem.gamma) * (problem.A - problem.B @ K[0])
    P = scipy.linalg.solve_discrete_lyapunov(F.T, problem.Q[0] + K[0].T @ problem.R[0] @ K[0])
    assert agent_costs(problem, K)[0] == pytest.approx(np.trace(P), rel=1e-9)


def test_average_cost_is_the_mean_cost_lqr_and_riccati_is_its_minimum():
    problem = random_lqr(n_agents=5, seed=2, heterogeneity=1.0)
    K = _gains_near_optimum(problem)[0]
    assert global_cost(problem, K) == pytest.approx(agent_costs(problem, K).mean(), rel=1e-12)
    np.testing.assert_allclose(global_gradient(problem, K), agent_gradients(problem, K).mean(0), rtol=1e-9, atol=1e-12)
    sol = optimal_gain(problem)
    assert np.linalg.norm(global_gradient(problem, sol.gain)) <= 1e-9 * np.linalg.norm(global_gradient(problem, K))
    assert global_cost(problem, sol.gain) == pytest.approx(sol.cost, rel=1e-12)
    # every perturbation costs more
    rng = np.random.default_rng(0)
    perturbed = sol.gain + 1e-3 * rng.normal(size=(50, *sol.gain.shape))
    assert np.all(global_cost(problem, perturbed) > sol.cost)


def test_centralised_gradient_descent_reaches_the_riccati_cost():
    """Exact centralised PG (H = 1 on the mean cost) from K0 = 0 finds C̄(K*) to 1e-8 relative."""
    problem = random_lqr(n_agents=8, seed=0, heterogeneity=1.0)
    sol = optimal_gain(problem)
    K = problem.initial_gain.copy()
    for _ in range(1500):
        K = K - 0.01 * global_gradient(problem, K)
    gap = (global_cost(problem, K) - sol.cost) / sol.cost
    assert abs(gap) <= 1e-8
    np.testing.assert_allclose(K, sol.gain, atol=1e-6)


def test_curvature_heterogeneity_makes_mean_of_local_optima_suboptimal():
    problem = random_lqr(n_agents=8, seed=0, heterogeneity=1.0)
    local = agent_optimal_gains(problem)
    sol = optimal_gain(problem)
    assert (global_cost(problem, local.mean(0)) - sol.cost) / sol.cost > 1e-3
    # the agents' costs have the same spectrum but different principal directions
    spectra = np.linalg.eigvalsh(problem.Q)
    np.testing.assert_allclose(spectra, np.broadcast_to(spectra[0], spectra.shape), rtol=1e-10)
    assert not np.allclose(problem.Q[0], problem.Q[1])
    # no heterogeneity: identical agents, whose own optimum is the global one
    same = random_lqr(n_agents=8, seed=0, heterogeneity=0.0)
    np.testing.assert_allclose(same.Q, np.broadcast_to(same.Q[0], same.Q.shape))
    np.testing.assert_allclose(agent_optimal_gains(same)[3], optimal_gain(same).gain, atol=1e-10)


def test_unstable_gain_has_infinite_cost_and_a_clear_gradient_error():
    problem = random_lqr(n_agents=3, seed=0)
    K = np.stack([np.zeros((2, 4)), 100 * np.ones((2, 4)), np.zeros((2, 4))])
    assert problem.spectral_radius(K[1]) >= 1
    costs = agent_costs(problem, K)
    assert np.isinf(costs[1]) and np.all(np.isfinite(costs[[0, 2]]))
    assert np.isinf(global_cost(problem, K[1]))
    with pytest.raises(UnstableGainError, match=r"agent\(s\) \[1\].*destabilises.*smaller learning rate"):
        agent_gradients(problem, K)
    assert issubclass(UnstableGainError, ValueError)


def test_discount_convention_and_noise():
    problem = random_lqr(n_agents=2, seed=4, noise_std=0.2, gamma=0.8)
    K = _gains_near_optimum(problem)[0]
    # noise only changes the effective initial covariance: Σ_eff = Σ0 + γ/(1−γ) W
    quiet = FederatedLQR(problem.A, problem.B, problem.Q, problem.R, problem.effective_covariance(), gamma=0.8)
    np.testing.assert_allclose(agent_costs(problem, K), agent_costs(quiet, K), rtol=1e-12)
    # K* does not depend on the noise; the Riccati cost is tr(P* Σ_eff)
    np.testing.assert_allclose(optimal_gain(problem).gain, optimal_gain(quiet).gain, rtol=1e-10)
    with pytest.raises(ValueError, match="gamma < 1"):
        FederatedLQR(problem.A, problem.B, problem.Q, problem.R, np.eye(4), noise_covariance=np.eye(4), gamma=1.0)


def test_generator_open_loop_unstable_gets_a_stabilising_initial_gain():
    problem = random_lqr(n_agents=2, seed=0, spectral_radius=1.5, gamma=0.9)
    assert np.abs(np.linalg.eigvals(problem.A)).max() == pytest.approx(1.5)
    assert problem.spectral_radius(problem.initial_gain) < 1
    assert problem.spectral_radius(np.zeros((2, 4))) >= 1
    assert np.isfinite(solve_riccati(problem, problem.mean_Q, problem.mean_R).cost)


def test_problem_validation():
    p = random_lqr(n_agents=2, seed=0)
    with pytest.raises(ValueError, match="positive definite"):
        FederatedLQR(p.A, p.B, -p.Q, p.R, np.eye(4))
    with pytest.raises(ValueError, match="R must have shape"):
        FederatedLQR(p.A, p.B, p.Q, p.R[:1], np.eye(4))
    with pytest.raises(ValueError, match="does not stabilise"):
        FederatedLQR(p.A, p.B, p.Q, p.R, np.eye(4), initial_gain=100 * np.ones((2, 4)))
    with pytest.raises(ValueError, match="heterogeneity"):
        random_lqr(heterogeneity=-1)


def test_problem_keeps_private_read_only_copies():
    p = random_lqr(n_agents=2, seed=0)
    A, Q = np.array(p.A), np.array(p.Q)
    problem = FederatedLQR(A, p.B, Q, p.R, np.eye(4))
    A[0, 0] += 1.0  # the caller's arrays stay writable and do not alias the problem's
    assert problem.A[0, 0] == p.A[0, 0]
    with pytest.raises(ValueError, match="read-only"):
        problem.Q[0, 0, 0] = 1.0

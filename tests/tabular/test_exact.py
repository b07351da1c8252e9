import itertools

import numpy as np
import pytest

from sb3_fedpg.tabular import (
    agent_gradients,
    agent_objectives,
    garnet,
    global_gradient,
    global_objective,
    gridworld,
    optimal_objective,
    truncated_policy_gradient,
    value_iteration,
)


def _finite_differences(mdp, theta, tau, eps=1e-6):
    grad = np.zeros_like(theta)
    for s in range(mdp.n_states):
        for a in range(mdp.n_actions):
            shift = np.zeros_like(theta)
            shift[:, s, a] = eps
            grad[:, s, a] = (agent_objectives(mdp, theta + shift, tau) - agent_objectives(mdp, theta - shift, tau)) / (2 * eps)
    return grad


@pytest.mark.parametrize("tau", [0.0, 0.3])
def test_gradient_matches_finite_differences(tau):
    mdp = garnet(6, 3, 2, n_agents=3, gamma=0.85, seed=1)
    theta = np.random.default_rng(0).normal(size=(3, 6, 3))
    exact = agent_gradients(mdp, theta, tau)
    assert np.abs(exact - _finite_differences(mdp, theta, tau)).max() < 1e-7
    assert np.abs(exact).max() > 1e-2  # not trivially zero


def test_gradient_large_states_uses_lu_path():
    mdp = garnet(40, 2, 3, n_agents=2, seed=2)  # above LU_MIN_STATES
    theta = np.random.default_rng(1).normal(size=(2, 40, 2))
    small = agent_gradients(mdp, theta, 0.1)
    shift = np.zeros_like(theta)
    shift[:, 5, 1] = 1e-6
    fd = (agent_objectives(mdp, theta + shift, 0.1) - agent_objectives(mdp, theta - shift, 0.1)) / 2e-6
    assert np.allclose(small[:, 5, 1], fd, atol=1e-7)


@pytest.mark.parametrize("tau", [0.0, 0.2])
def test_proposition_1_average_mdp(tau):
    mdp = garnet(7, 3, 3, n_agents=5, heterogeneity=1.0, seed=4)
    theta = np.random.default_rng(2).normal(size=(7, 3))
    average = mdp.average_mdp()
    assert np.allclose(global_gradient(mdp, theta, tau), agent_gradients(average, theta, tau)[0], atol=1e-12)
    assert np.isclose(agent_objectives(mdp, theta, tau).mean(), global_objective(mdp, theta, tau))
    # and the agents' own gradients do differ (the heterogeneity is real)
    grads = agent_gradients(mdp, theta, tau)
    assert np.abs(grads - grads.mean(0)).max() > 1e-2


@pytest.mark.parametrize("tau", [0.0, 0.1])
def test_value_iteration_dominates_random_policies(tau):
    mdp = gridworld(3, 4, n_agents=3, slip=0.2, seed=5)
    optimum = optimal_objective(mdp, tau).objective
    thetas = np.random.default_rng(3).normal(scale=3.0, size=(200, mdp.n_states, mdp.n_actions))
    values = global_objective(mdp, thetas, tau)
    assert np.all(values <= optimum + 1e-10)
    # the optimal (softmax / greedy) policy attains it
    solution = optimal_objective(mdp, tau)
    logits = np.log(np.maximum(solution.policy, 1e-300))
    assert np.isclose(global_objective(mdp, logits, tau), optimum, atol=1e-9)


def test_soft_value_iteration_fixed_point_and_tau_limit():
    mdp = garnet(8, 3, 3, n_agents=2, seed=6)
    soft = optimal_objective(mdp, 0.05)
    q = mdp.mean_rewards + mdp.gamma * mdp.transitions @ soft.values
    assert np.allclose(soft.values, 0.05 * np.log(np.exp(q / 0.05).sum(-1)), atol=1e-12)
    hard = optimal_objective(mdp, 0.0)
    assert hard.objective < soft.objective < hard.objective + 0.05 * np.log(3) / (1 - mdp.gamma) + 1e-12
    plain = value_iteration(mdp.transitions, mdp.mean_rewards, mdp.initial_distribution, mdp.gamma, refine=False, tol=1e-12)
    assert np.isclose(plain.objective, hard.objective, atol=1e-9)


def test_truncated_gradient_bias_decays_like_gamma_power():
    mdp = garnet(6, 3, 3, n_agents=2, gamma=0.8, seed=7)
    theta = np.random.default_rng(4).normal(size=(2, 6, 3))
    exact = agent_gradients(mdp, theta, 0.1)
    errors = [np.abs(truncated_policy_gradient(mdp, theta, k, 0.1) - exact).max() for k in (5, 10, 20, 40)]
    assert all(b < a for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-3 and errors[-1] < 0.8**30 * errors[0]


def test_invalid_theta_and_tau():
    mdp = garnet(4, 2, 2, n_agents=2)
    with pytest.raises(ValueError, match="theta must have shape"):
        agent_gradients(mdp, np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="tau must be non-negative"):
        agent_gradients(mdp, np.zeros((4, 2)), tau=-1.0)

"""FedSVRPG-M on tabular MDPs: its importance-weighted estimator, its momentum and its fixed point, against ground truth."""

import numpy as np
import pytest

from sb3_fedpg.common.fedmath import importance_weights
from sb3_fedpg.tabular import (
    FederatedTabularMDP,
    GPOMDPEstimator,
    exact_federated_run,
    exact_svrpgm_run,
    garnet,
    global_gradient,
    optimal_objective,
    sampled_svrpgm_oracle,
    sampled_svrpgm_run,
    softmax_policy,
    truncated_policy_gradient,
)


def parameters(mdp, seed=0, step=0.4):
    """A shared previous ``θ̄_{r−1}`` and per-agent current parameters a few local steps away from it."""
    rng = np.random.default_rng(seed)
    previous = rng.normal(size=mdp.n_params)
    current = previous + step * rng.normal(size=(mdp.n_agents, mdp.n_params))
    return previous, current


@pytest.mark.parametrize(("tau", "baseline"), [(0.0, "leave_one_out"), (0.2, "leave_one_out"), (0.0, "none")])
def test_importance_weighted_difference_is_unbiased(tau, baseline):
    # E_{τ∼θ_new}[ĝ(τ; θ_new) − w(τ | θ_old, θ_new) ĝ(τ; θ_old)] = ∇J_K(θ_new) − ∇J_K(θ_old), computed exactly (the
    # K-truncated gradient is the estimator's expectation): the variance-reduced correction of Eq. (4) is unbiased.
    mdp = garnet(5, 3, 3, n_agents=2, gamma=0.8, seed=0)
    previous, current = parameters(mdp)
    estimator = GPOMDPEstimator(mdp, horizon=8, n_trajectories=100, tau=tau, baseline=baseline, seed=1)
    oracle = sampled_svrpgm_oracle(estimator)(previous)
    differences = np.stack([np.subtract(*oracle(current, 0)) for _ in range(300)])
    truth = (
        truncated_policy_gradient(mdp, current, 8, tau) - truncated_policy_gradient(mdp, previous.reshape(5, 3), 8, tau)
    ).reshape(2, -1)
    stderr = differences.std(0) / np.sqrt(len(differences)) + 1e-12
    assert np.abs((differences.mean(0) - truth) / stderr).max() < 4.5
    assert np.abs(differences.mean(0) - truth).max() < 0.01


def test_importance_weights_are_trajectory_likelihood_ratios():
    mdp = garnet(4, 3, 2, n_agents=2, gamma=0.9, seed=2)
    previous, current = parameters(mdp, seed=3)
    estimator = GPOMDPEstimator(mdp, horizon=6, n_trajectories=4000, seed=4)
    trajectories = estimator.sample(current)
    weights = importance_weights(
        estimator.log_likelihood(np.broadcast_to(previous, current.shape), trajectories),
        estimator.log_likelihood(current, trajectories),
        time_axis=0,
    )
    # by hand for one trajectory: Π_h π_old(a_h|s_h) / π_new(a_h|s_h) (the transitions cancel)
    old, new = softmax_policy(previous.reshape(4, 3)), softmax_policy(current[1].reshape(4, 3))
    states, actions = trajectories.states[:, 1, 7], trajectories.actions[:, 1, 7]
    assert weights[1, 7] == pytest.approx(np.prod(old[states, actions] / new[states, actions]), rel=1e-12)
    # E_{τ∼θ_new}[w] = 1
    assert np.abs(weights.mean(1) - 1).max() < 5 * weights.std(1).max() / np.sqrt(4000)
    clipped = importance_weights(
        estimator.log_likelihood(np.broadcast_to(previous, current.shape), trajectories),
        estimator.log_likelihood(current, trajectories),
        time_axis=0,
        max_weight=1.5,
    )
    assert clipped.max() == 1.5 and np.array_equal(clipped, np.minimum(weights, 1.5))


def test_one_local_step_is_centralised_gradient_ascent_at_any_heterogeneity():
    # H = 1 with exact gradients: the momentum's bookkeeping (u_0 = g, u_{r+1} = mean Δ / (η H), the correction at
    # θ̄_{r−1}) cancels exactly, every round is θ̄ + η_g η ∇J(θ̄): the server's momentum is the global gradient.
    mdp = garnet(6, 3, 2, n_agents=4, heterogeneity=1.0, gamma=0.9, seed=5)
    for beta in (0.3, 1.0):
        run = exact_svrpgm_run(
            mdp, local_steps=1, n_rounds=5, learning_rate=0.5, momentum_coef=beta, tau=0.1, server_learning_rate=2.0
        )
        params = run.params.reshape(6, -1)
        for r in range(5):
            step = 2.0 * 0.5 * global_gradient(mdp, params[r].reshape(6, 3), 0.1).reshape(-1)
            np.testing.assert_allclose(params[r + 1], params[r] + step, atol=1e-12)


def heterogeneous_mdp():
    return garnet(n_states=10, n_actions=4, branching=3, n_agents=8, heterogeneity=1.0, gamma=0.9, seed=0)


def test_constant_step_fixed_point_is_fedavg_pg_s_and_vanishes_with_the_step():
    # Exact gradients, heterogeneous agents, τ > 0, started at the soft optimum of the average-reward MDP. With constant
    # steps FedSVRPG-M's fixed point solves FedAvg-PG's equation to first order in η (the momentum is 0 there and β
    # cancels): the same heterogeneity bias, which vanishes as η → 0 (gap ∝ η²) — it converges to the average
    # objective's optimum only as the step shrinks. Fast-FedPG stays at the optimum at any step.
    mdp = heterogeneous_mdp()
    solution = optimal_objective(mdp, 0.1)
    start = np.log(solution.policy)  # softmax(log π*) = π*, the soft optimum
    gaps = {}
    for eta in (0.1, 0.025):
        kwargs = dict(
            local_steps=10, n_rounds=150, learning_rate=eta, tau=0.1, theta0=start, reference_objective=solution.objective
        )
        gaps["fedavg", eta] = exact_federated_run(mdp, correction=False, **kwargs).final_gap
        gaps["fast", eta] = exact_federated_run(mdp, **kwargs).final_gap
        gaps["svrpgm", eta] = exact_svrpgm_run(mdp, momentum_coef=0.5, **kwargs).final_gap
    for eta in (0.1, 0.025):
        assert gaps["fast", eta] < 1e-10
        assert gaps["svrpgm", eta] > 1e-6
        assert gaps["svrpgm", eta] == pytest.approx(gaps["fedavg", eta], rel=0.1)
    assert gaps["svrpgm", 0.025] < gaps["svrpgm", 0.1] / 8  # ∝ η² as η → 0 (16 for a 4x smaller step)


def momentum_estimates(mdp, momentum_coef, seed, n_rounds=40, learning_rate=1e-3, local_steps=2):
    """The server's momenta ``u_{r+1} = (θ̄_{r+1} − θ̄_r) / (η_g η H)`` of a run whose parameters barely move."""
    run = sampled_svrpgm_run(
        mdp,
        local_steps,
        n_rounds,
        learning_rate,
        horizon=8,
        n_trajectories=2,
        momentum_coef=momentum_coef,
        tau=0.1,
        seed=seed,
        reference_objective=0.0,
    )
    params = run.params.reshape(n_rounds + 1, -1)
    return (params[1:] - params[:-1]) / (learning_rate * local_steps)


def test_momentum_averages_the_noise_over_rounds_and_agents():
    # Near a fixed θ̄ (tiny steps) the importance-weighted correction is ~0 and u_{r+1} ≈ β (fresh average) + (1 − β) u_r:
    # its variance is β / (2 − β) of the fresh average's (0.11 for β = 0.2; β = 1 is FedAvg-PG, no momentum) and
    # falls like 1/N with the number of agents (the linear speed-up's mechanism).
    one = garnet(5, 3, 3, n_agents=1, gamma=0.8, seed=0)
    eight = FederatedTabularMDP(one.transitions, np.repeat(one.rewards, 8, 0), one.initial_distribution, one.gamma)

    def noise(mdp, beta):
        u = np.concatenate([momentum_estimates(mdp, beta, seed)[10:] for seed in range(3)])
        return u.var(0).sum()

    fresh = noise(one, 1.0)
    assert noise(one, 0.2) < 0.25 * fresh
    assert 1 / 16 < noise(eight, 1.0) / fresh < 1 / 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum_coef": 0.0}, "momentum_coef"),
        ({"momentum_coef": 1.5}, "momentum_coef"),
        ({"local_steps": 0}, "local_steps"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = dict(local_steps=2, n_rounds=1, learning_rate=0.1) | kwargs
    with pytest.raises(ValueError, match=message):
        exact_svrpgm_run(garnet(4, 2, 2, n_agents=2), **args)

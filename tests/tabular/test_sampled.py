import numpy as np
import pytest

from sb3_fedpg.tabular import GPOMDPEstimator, garnet, truncated_policy_gradient


@pytest.mark.parametrize(("tau", "baseline"), [(0.0, "leave_one_out"), (0.2, "leave_one_out"), (0.0, "none")])
def test_gpomdp_is_unbiased_for_truncated_gradient(tau, baseline):
    mdp = garnet(5, 3, 3, n_agents=2, gamma=0.8, seed=0)
    theta = np.random.default_rng(0).normal(size=(2, 5, 3))
    estimator = GPOMDPEstimator(mdp, horizon=8, n_trajectories=100, tau=tau, baseline=baseline, seed=1)
    samples = np.stack([estimator(theta) for _ in range(200)])
    truth = truncated_policy_gradient(mdp, theta, 8, tau)
    stderr = samples.std(0) / np.sqrt(len(samples)) + 1e-12
    assert np.abs((samples.mean(0) - truth) / stderr).max() < 4.5
    assert np.abs(samples.mean(0) - truth).max() < 0.01


def test_baseline_reduces_variance_and_seed_reproducible():
    mdp = garnet(5, 3, 3, n_agents=2, gamma=0.8, seed=0)
    theta = np.zeros((2, 15))
    variances = {}
    for baseline in ("none", "leave_one_out"):
        est = GPOMDPEstimator(mdp, 8, 10, baseline=baseline, seed=2)
        variances[baseline] = np.stack([est(theta) for _ in range(100)]).var(0).sum()
    assert variances["leave_one_out"] < 0.5 * variances["none"]
    a = GPOMDPEstimator(mdp, 8, 10, seed=3)(theta)
    b = GPOMDPEstimator(mdp, 8, 10, seed=3)(theta)
    assert a.shape == (2, 15) and np.array_equal(a, b)


def test_variance_falls_like_one_over_m():
    mdp = garnet(5, 3, 3, n_agents=1, gamma=0.8, seed=0)
    theta = np.zeros((1, 5, 3))
    var = {m: np.stack([GPOMDPEstimator(mdp, 8, m, seed=s)(theta) for s in range(150)]).var(0).sum() for m in (4, 32)}
    assert 4 < var[4] / var[32] < 16


def test_agents_see_their_own_rewards():
    mdp = garnet(4, 2, 2, n_agents=2, seed=1)
    rewards = mdp.rewards.copy()
    rewards[1] = 0.0
    silent = type(mdp)(mdp.transitions, rewards, mdp.initial_distribution, mdp.gamma)
    grads = GPOMDPEstimator(silent, 5, 10, baseline="none", seed=0)(np.zeros((2, 4, 2)))
    assert np.all(grads[1] == 0) and np.any(grads[0] != 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 0}, "horizon"),
        ({"n_trajectories": 0}, "n_trajectories"),
        ({"tau": -1}, "tau"),
        ({"baseline": "x"}, "baseline"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = {"horizon": 5, "n_trajectories": 5} | kwargs
    with pytest.raises(ValueError, match=message):
        GPOMDPEstimator(garnet(4, 2, 2, n_agents=1), **args)

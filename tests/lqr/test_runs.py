"""
Federated runs on exact LQR gradients (acceptance) and on sampled GPOMDP gradients.

Acceptance setting (``docs/benchmarks/lqr.md``): ``random_lqr`` defaults (n_x = 4, n_u = 2, N = 8,
heterogeneity 1, γ = 0.9, ρ(A) = 0.8), K0 = 0, η = 0.02, H = 10, 50 rounds, seeds 0–4.
"""

import numpy as np
import pytest

from sb3_fedpg.common import fedmath
from sb3_fedpg.lqr import (
    LQRGPOMDPEstimator,
    UnstableGainError,
    exact_federated_run,
    optimal_gain,
    random_lqr,
    sampled_federated_run,
    truncated_agent_gradients,
)
from sb3_fedpg.lqr import runs as runs_module

ETA, H, ROUNDS = 0.02, 10, 50


@pytest.fixture(scope="module")
def acceptance_runs():
    runs = {}
    for seed in range(5):
        problem = random_lqr(seed=seed)
        runs[seed] = (
            exact_federated_run(problem, H, ROUNDS, ETA, correction=True),
            exact_federated_run(problem, H, ROUNDS, ETA, correction=False),
        )
    return runs


@pytest.mark.parametrize("seed", range(5))
def test_acceptance_fast_fedpg_reaches_riccati_optimum_fedavg_stalls(acceptance_runs, seed):
    fast, avg = acceptance_runs[seed]
    assert fast.final_gap <= 1e-8  # measured: ~1e-15 (round-off) on all five
    assert fast.gaps.min() > -1e-12  # never below the Riccati optimum: the ground truth is right
    np.testing.assert_allclose(fast.gains[-1], optimal_gain(random_lqr(seed=seed)).gain, atol=1e-6)
    assert avg.final_gap >= 1e-3  # measured: 1.1e-3 … 6.0e-3
    assert avg.gaps[-1] >= 0.999 * avg.gaps[-11]  # stalled, not still converging


def test_fast_fedpg_is_linear(acceptance_runs):
    fast, _ = acceptance_runs[0]
    gaps = fast.gaps[:6]
    ratios = gaps[1:] / gaps[:-1]
    assert np.all(ratios < 0.2)  # a straight line on a log plot, well before round-off


def test_fedavg_bias_grows_with_local_steps_and_heterogeneity():
    def gap(h, local_steps):
        return exact_federated_run(random_lqr(seed=0, heterogeneity=h), local_steps, 20, ETA, correction=False).final_gap

    assert gap(1.0, 2) < gap(1.0, 5) < gap(1.0, 10)
    assert gap(0.0, 10) < 1e-10 < gap(0.5, 10) < gap(1.0, 10)


def test_rounds_go_through_fedmath(monkeypatch):
    calls = []
    original = fedmath.fedpg_round

    def spy(*args, **kwargs):
        calls.append(kwargs.get("correction"))
        return original(*args, **kwargs)

    monkeypatch.setattr(runs_module, "fedpg_round", spy)
    exact_federated_run(random_lqr(seed=0, n_agents=2), 2, 3, ETA, correction=False)
    assert calls == [False] * 3


def test_destabilising_step_raises_naming_the_round_never_nan():
    problem = random_lqr(seed=0)
    with pytest.raises(ValueError, match=r"round 0 .*learning_rate=1\.0.*destabilises.*smaller learning rate"):
        exact_federated_run(problem, 10, 5, 1.0)
    with pytest.raises(UnstableGainError, match="round 0"):
        sampled_federated_run(problem, 5, 5, 1.0, horizon=10, n_trajectories=4)
    with pytest.raises(ValueError, match="K0 destabilises"):
        exact_federated_run(problem, 1, 1, ETA, K0=100 * np.ones((2, 4)))


def test_truncated_gradient_converges_to_exact_gradient():
    problem = random_lqr(seed=1, n_agents=2, noise_std=0.2)
    K = 0.5 * optimal_gain(problem).gain
    from sb3_fedpg.lqr import agent_gradients

    exact = agent_gradients(problem, K, exploration_std=0.5)
    np.testing.assert_allclose(truncated_agent_gradients(problem, K, 400, 0.5), exact, rtol=1e-9, atol=1e-12)
    assert not np.allclose(truncated_agent_gradients(problem, K, 5, 0.5), exact, rtol=1e-2)


def test_gpomdp_is_unbiased_for_the_truncated_gradient():
    problem = random_lqr(seed=0, n_agents=2, noise_std=0.3)
    K = np.stack([0.5 * optimal_gain(problem).gain, 0.2 * optimal_gain(problem).gain])
    horizon, sigma, batches = 8, 0.5, 40
    estimator = LQRGPOMDPEstimator(problem, horizon, 1000, sigma, seed=1)
    samples = np.stack([estimator(K) for _ in range(batches)])
    expected = -truncated_agent_gradients(problem, K, horizon, sigma)
    z = (samples.mean(0) - expected) / (samples.std(0, ddof=1) / np.sqrt(batches))
    assert np.abs(z).max() < 4.0, z
    assert estimator.n_samples == batches * 2 * 1000 * horizon
    flat = estimator(K.reshape(2, -1))
    assert flat.shape == (2, 8) and np.all(np.isfinite(flat))


def test_sampled_fast_fedpg_improves_and_more_agents_average_noise():
    problem = random_lqr(seed=0, n_agents=8)
    run = sampled_federated_run(problem, 5, 30, 0.005, horizon=30, n_trajectories=20, exploration_std=0.5, seed=0)
    assert run.final_gap < 0.2 * run.gaps[0]
    assert run.n_samples == 30 * 5 * 8 * 20 * 30
    assert np.all(np.isfinite(run.gaps))


@pytest.mark.parametrize("name", ["learning_rate", "server_learning_rate"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_step_sizes_must_be_finite_and_positive(name, value):
    from sb3_fedpg.lqr import random_lqr

    kwargs = {"learning_rate": ETA, name: value}
    with pytest.raises(ValueError, match=f"{name} must be a finite number > 0"):
        exact_federated_run(random_lqr(seed=0, heterogeneity=0.5), 2, 3, **kwargs)

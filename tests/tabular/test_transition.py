"""Transition heterogeneity: per-agent kernels P_i, exact gradients, reference optimum, runs."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sb3_fedpg.tabular import (
    FederatedTabularMDP,
    GPOMDPEstimator,
    TabularMDPEnv,
    agent_gradients,
    agent_objectives,
    exact_federated_run,
    garnet,
    global_gradient,
    global_objective,
    local_maximum,
    optimal_objective,
    reference_optimum,
    truncated_policy_gradient,
)

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _stacked(mdp):
    """The same shared-P MDP with P copied once per agent (the general per-agent code path)."""
    transitions = np.broadcast_to(mdp.transitions, (mdp.n_agents, *mdp.transitions.shape)).copy()
    return FederatedTabularMDP(transitions, mdp.rewards, mdp.initial_distribution, mdp.gamma)


def _finite_differences(mdp, theta, tau, eps=1e-6):
    grad = np.zeros_like(theta)
    for s in range(mdp.n_states):
        for a in range(mdp.n_actions):
            shift = np.zeros_like(theta)
            shift[:, s, a] = eps
            grad[:, s, a] = (agent_objectives(mdp, theta + shift, tau) - agent_objectives(mdp, theta - shift, tau)) / (2 * eps)
    return grad


def _own_mdp_objectives(mdp, theta, tau):
    """J_i computed agent by agent in single-agent shared-P MDPs: an independent reference."""
    return np.array(
        [
            agent_objectives(
                FederatedTabularMDP(mdp.agent_transitions(i), mdp.rewards[i : i + 1], mdp.initial_distribution, mdp.gamma),
                theta[i],
                tau,
            )[0]
            for i in range(mdp.n_agents)
        ]
    )


@pytest.mark.parametrize("tau", [0.0, 0.3])
def test_per_agent_gradient_matches_finite_differences(tau):
    mdp = garnet(6, 3, 2, n_agents=3, gamma=0.85, seed=1, transition_heterogeneity=0.7)
    assert mdp.transitions.shape == (3, 6, 3, 6)
    theta = np.random.default_rng(0).normal(size=(3, 6, 3))
    # the objectives are those of each agent's own MDP
    assert np.allclose(agent_objectives(mdp, theta, tau), _own_mdp_objectives(mdp, theta, tau), atol=1e-12)
    exact = agent_gradients(mdp, theta, tau)
    assert np.abs(exact - _finite_differences(mdp, theta, tau)).max() < 1e-7
    assert np.abs(exact).max() > 1e-2
    # the global gradient at shared parameters is the gradient of the mean objective
    shared = theta[0]
    fd = _finite_differences(mdp, np.broadcast_to(shared, theta.shape).copy(), tau).mean(0)
    assert np.abs(global_gradient(mdp, shared, tau) - fd).max() < 1e-7
    batch = np.random.default_rng(1).normal(size=(5, 6, 3))
    means = [agent_objectives(mdp, b, tau).mean() for b in batch]
    assert np.allclose(global_objective(mdp, batch, tau), means, atol=1e-12)
    assert np.isclose(global_objective(mdp, shared, tau), agent_objectives(mdp, shared, tau).mean(), atol=1e-12)


def test_gradient_per_agent_transitions_large_states_lu_path():
    mdp = garnet(40, 2, 3, n_agents=2, seed=2, transition_heterogeneity=0.5)  # above LU_MIN_STATES
    theta = np.random.default_rng(1).normal(size=(2, 40, 2))
    exact = agent_gradients(mdp, theta, 0.1)
    shift = np.zeros_like(theta)
    shift[:, 5, 1] = 1e-6
    fd = (agent_objectives(mdp, theta + shift, 0.1) - agent_objectives(mdp, theta - shift, 0.1)) / 2e-6
    assert np.allclose(exact[:, 5, 1], fd, atol=1e-7)


@pytest.mark.parametrize("tau", [0.0, 0.1])
def test_kappa_zero_reproduces_shared_p(tau):
    shared = garnet(10, 4, 3, n_agents=8, seed=0)
    assert shared.shared_transitions
    zero = garnet(10, 4, 3, n_agents=8, seed=0, transition_heterogeneity=0.0)
    assert np.array_equal(zero.transitions, shared.transitions) and np.array_equal(zero.rewards, shared.rewards)
    stacked = _stacked(shared)
    assert not stacked.shared_transitions
    theta = np.random.default_rng(2).normal(size=(8, 10, 4))
    assert np.allclose(agent_gradients(stacked, theta, tau), agent_gradients(shared, theta, tau), rtol=0, atol=1e-13)
    assert np.allclose(agent_objectives(stacked, theta, tau), agent_objectives(shared, theta, tau), rtol=0, atol=1e-12)
    assert np.allclose(global_objective(stacked, theta, tau), global_objective(shared, theta, tau), rtol=0, atol=1e-12)
    assert np.allclose(
        truncated_policy_gradient(stacked, theta, 7, tau), truncated_policy_gradient(shared, theta, 7, tau), atol=1e-13
    )
    j_star = optimal_objective(shared, tau).objective
    for correction in (True, False):
        a = exact_federated_run(shared, 10, 30, 1.0, tau, correction)
        b = exact_federated_run(stacked, 10, 30, 1.0, tau, correction, reference_objective=j_star)
        assert np.abs(a.params - b.params).max() < 1e-10
        assert np.abs(a.gaps - b.gaps).max() < 1e-12


@pytest.mark.parametrize("tau", [0.0, 0.1])
def test_reference_optimum_equals_value_iteration_for_shared_p(tau):
    mdp = garnet(8, 3, 3, n_agents=4, seed=3)
    reference = reference_optimum(_stacked(mdp), tau, n_starts=4, n_steps=300)
    assert abs(reference.objective - optimal_objective(mdp, tau).objective) < 1e-10
    assert reference.spread < 1e-8 and reference.n_at_best == 4
    assert reference.start_objectives.shape == (4,) and np.all(reference.start_objectives >= reference.ascent_objectives)
    assert np.array_equal(reference.initial_params[0], np.zeros((8, 3)))


@pytest.mark.parametrize("tau", [0.0, 0.1])
def test_reference_optimum_per_agent_dominates(tau):
    mdp = garnet(8, 3, 3, n_agents=4, seed=4, transition_heterogeneity=1.0)
    reference = reference_optimum(mdp, tau, n_starts=6, n_steps=300)
    # the policy it reports attains it, and no random policy beats it
    logits = np.log(np.maximum(reference.policy, 1e-300))
    assert abs(global_objective(mdp, logits, tau) - reference.objective) < 1e-9
    random = np.random.default_rng(5).normal(scale=3.0, size=(300, 8, 3))
    assert global_objective(mdp, random, tau).max() <= reference.objective + 1e-12
    # Fast-FedPG's end point is no better than the reference either (gaps ≥ 0 up to round-off)
    fast = exact_federated_run(mdp, 10, 100, 1.0, tau, reference_objective=reference.objective)
    assert fast.gaps.min() > -1e-10
    # refining its end point reaches a local maximum: above the end point, not above the reference
    local, policy = local_maximum(mdp, fast.params[-1], tau)
    assert fast.objectives[-1] - 1e-12 <= local <= reference.objective + 1e-10
    assert abs(global_objective(mdp, np.log(np.maximum(policy, 1e-300)), tau) - local) < 1e-9
    with pytest.raises(ValueError, match="tau must be non-negative"):
        reference_optimum(mdp, -1.0)


def test_fast_fedpg_converges_with_per_agent_transitions():
    """Stationary points of J̄ are fixed points of Fast-FedPG whatever the heterogeneity; FedAvg-PG's are not."""
    mdp = garnet(10, 4, 3, n_agents=8, seed=0, transition_heterogeneity=0.5)
    reference = reference_optimum(mdp, 0.1, n_starts=4, n_steps=300).objective
    fast = exact_federated_run(mdp, 10, 300, 1.0, 0.1, True, reference_objective=reference)
    avg = exact_federated_run(mdp, 10, 300, 1.0, 0.1, False, reference_objective=reference)
    assert fast.final_gap < 1e-8
    assert avg.final_gap > 1e-3
    assert fast.config["correction"] and fast.optimal_objective == reference


def test_default_reference_for_per_agent_runs():
    mdp = garnet(5, 2, 2, n_agents=2, seed=6, transition_heterogeneity=0.5)
    run = exact_federated_run(mdp, 2, 5, 1.0, 0.1)
    assert run.optimal_objective == pytest.approx(reference_optimum(mdp, 0.1).objective, abs=1e-12)


def test_garnet_transition_heterogeneity_structure():
    mdp = garnet(12, 3, 4, n_agents=5, seed=3, transition_heterogeneity=1.0)
    assert mdp.transitions.shape == (5, 12, 3, 12)
    assert np.all((mdp.transitions > 0).sum(-1) <= 4) and np.allclose(mdp.transitions.sum(-1), 1)
    assert not np.allclose(mdp.transitions[0], mdp.transitions[1])
    shared = garnet(12, 3, 4, n_agents=5, seed=3)
    half = garnet(12, 3, 4, n_agents=5, seed=3, transition_heterogeneity=0.5)
    assert np.allclose(half.transitions, 0.5 * (shared.transitions + mdp.transitions))
    assert np.array_equal(half.rewards, shared.rewards)
    # agent i's own kernel does not depend on N
    more = garnet(12, 3, 4, n_agents=7, seed=3, transition_heterogeneity=1.0)
    assert np.array_equal(more.transitions[:5], mdp.transitions)
    with pytest.raises(ValueError, match="transition_heterogeneity"):
        garnet(12, 3, 4, transition_heterogeneity=1.5)


def test_per_agent_mdp_validation_and_helpers():
    mdp = garnet(5, 2, 2, n_agents=3, seed=0, transition_heterogeneity=0.5)
    assert not mdp.shared_transitions and (mdp.n_states, mdp.n_actions, mdp.n_agents) == (5, 2, 3)
    assert np.array_equal(mdp.agent_transitions(1), mdp.transitions[1])
    sub = mdp.subset([2])
    assert sub.transitions.shape == (1, 5, 2, 5) and np.array_equal(sub.transitions[0], mdp.transitions[2])
    assert mdp.subset(slice(0, 2)).transitions.shape == (2, 5, 2, 5)
    with pytest.raises(ValueError, match="Proposition 1"):
        mdp.average_mdp()
    with pytest.raises(ValueError, match="reference_optimum"):
        optimal_objective(mdp)
    with pytest.raises(ValueError, match="with N = 3"):
        FederatedTabularMDP(mdp.transitions[:2], mdp.rewards, mdp.initial_distribution, 0.9)
    bad = mdp.transitions.copy()
    bad[1, 2, 0] *= 1.5
    with pytest.raises(ValueError, match=r"P\[1, 2, 0, :\] sums to"):
        FederatedTabularMDP(bad, mdp.rewards, mdp.initial_distribution, 0.9)
    with pytest.raises(ValueError, match="agent must lie"):
        mdp.agent_transitions(3)


def test_sampled_and_env_use_own_transitions():
    mdp = garnet(5, 3, 3, n_agents=2, gamma=0.8, seed=0, transition_heterogeneity=1.0)
    theta = np.random.default_rng(0).normal(size=(2, 5, 3))
    estimator = GPOMDPEstimator(mdp, horizon=8, n_trajectories=100, tau=0.1, seed=1)
    samples = np.stack([estimator(theta) for _ in range(200)])
    truth = truncated_policy_gradient(mdp, theta, 8, 0.1)
    stderr = samples.std(0) / np.sqrt(len(samples)) + 1e-12
    assert np.abs((samples.mean(0) - truth) / stderr).max() < 4.5
    # the truncated expectation tends to the exact per-agent gradient
    assert np.abs(truncated_policy_gradient(mdp, theta, 200, 0.1) - agent_gradients(mdp, theta, 0.1)).max() < 1e-12
    env = TabularMDPEnv(mdp, agent=1, horizon=10_000, seed=0)
    env.reset()
    counts = np.zeros(5)
    for _ in range(4000):
        env._state = 0
        counts[env.step(1)[4]["state"]] += 1
    assert np.allclose(counts / counts.sum(), mdp.transitions[1, 0, 1], atol=0.03)


def test_transition_benchmark_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("tabular_transition")
    data = module.main(["--quick", "--out-dir", str(tmp_path)])
    for suffix in ("png", "md"):
        assert (tmp_path / f"tabular_transition.{suffix}").stat().st_size > 100
    assert json.loads((tmp_path / "tabular_transition.json").read_text()).keys() == data.keys()
    sys.modules.pop("tabular_transition", None)

"""
Advantage normalisation keeps the average-return objective (``normalize_advantage="shared"``).

The ground truth is an entropy-regularised two-agent bandit: agent ``i`` earns ``c_i r_i(a)``, and the federation's
fixed point under one shared scale ``σ`` is ``π* = softmax(r̄ / (τ σ(π*)))`` with ``r̄ = mean_i c_i r_i`` (``σ²`` the
agents' pooled within-agent variance of their advantages). Multiplying agent 0's reward by 10 moves ``π*`` from uniform
to ``[0.65, 0.10, 0.25]``; with per-agent normalisation every agent's gradient loses its scale and the learned policy
stays uniform, whatever ``c_0`` (the objective ``Σ_i ∇J_i / σ_i``).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM, make_federated_vec_env
from sb3_fedpg.common import fedmath

OBS = np.array([0.5, -1.0, 1.0], dtype=np.float32)
#: agent 0 prefers action 0, agent 1 action 1; action 2 is the compromise. Unweighted, all three are equally good.
REWARDS = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
TAU = 1.0  # entropy coefficient: an interior optimum whose every coordinate the test can check


class Bandit(gym.Env):
    observation_space = spaces.Box(-2, 2, (3,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, rewards):
        self.rewards = rewards

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return OBS.copy(), {}

    def step(self, action):
        return OBS.copy(), float(self.rewards[int(action)]), True, False, {}


def shared_scale_optimum(rewards, tau):
    """The fixed point ``π = softmax(mean_i r_i / (τ σ(π)))`` by damped iteration (``σ²``: mean of ``Var_π r_i``)."""
    pi = np.ones(rewards.shape[1]) / rewards.shape[1]
    for _ in range(3000):
        sigma = np.sqrt(np.mean([pi @ (r - pi @ r) ** 2 for r in rewards]))
        logits = rewards.mean(0) / (tau * sigma)
        target = np.exp(logits - logits.max())
        pi = 0.9 * pi + 0.1 * target / target.sum()
    return pi


def learned_policy(algo, weight, normalize_advantage, **kwargs):
    rewards = REWARDS * np.array([[weight], [1.0]])
    env = make_federated_vec_env([lambda r=r: Bandit(r) for r in rewards], n_envs_per_agent=64, seed=0)
    model = algo(
        "MlpPolicy",
        env,
        n_steps=1,
        ent_coef=TAU,
        normalize_advantage=normalize_advantage,
        policy_kwargs={"net_arch": []},
        seed=0,
        **kwargs,
    )
    model.learn(20_000)
    with th.no_grad():
        return model.policy.get_distribution(th.as_tensor(OBS[None])).distribution.probs[0].numpy()


def test_the_ground_truth_moves_with_the_weight():
    np.testing.assert_allclose(shared_scale_optimum(REWARDS, TAU), np.ones(3) / 3, atol=1e-9)
    weighted = shared_scale_optimum(REWARDS * np.array([[10.0], [1.0]]), TAU)
    assert weighted[0] > 0.6 and weighted[1] < 0.15


# Each algorithm with its default correction and normalisation: FederatedPG's correction, FederatedPPO's SNR-damped
# surrogate correction (without one, each agent's own Adam removes its gradient's scale: see docs/algorithms.md);
# FedSVRPG-M with one local step (with more, its constant-step drift bias adds to the picture).
ALGORITHMS = {
    "FederatedPG": (FederatedPG, {"learning_rate": 0.1}),
    "FederatedPPO": (FederatedPPO, {}),
    "FederatedPPO-undamped": (FederatedPPO, {"variance_control": "none"}),
    "FedSVRPG-M": (FederatedSVRPGM, {"learning_rate": 0.1, "local_steps": 1}),
}


def test_federated_ppo_without_a_correction_misses_the_weighted_optimum():
    # Its agents' own Adam moments remove each agent's gradient scale: a tenfold reward changes nothing.
    expected = shared_scale_optimum(REWARDS * np.array([[10.0], [1.0]]), TAU)
    uncorrected = learned_policy(FederatedPPO, 10.0, "shared", correction=False)
    assert np.abs(uncorrected - expected).max() > 0.2, (uncorrected, expected)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_a_tenfold_reward_moves_the_optimum_as_the_average_return_says(name):
    algo, kwargs = ALGORITHMS[name]
    expected = shared_scale_optimum(REWARDS * np.array([[10.0], [1.0]]), TAU)
    shared = learned_policy(algo, 10.0, "shared", **kwargs)
    assert np.abs(shared - expected).max() < 0.06, (shared, expected)
    # per-agent scales: agent 0's weight is invisible, the policy stays at the unweighted (uniform) compromise
    per_agent = learned_policy(algo, 10.0, "per_agent", **kwargs)
    assert np.abs(per_agent - expected).max() > 0.2, (per_agent, expected)


def test_shared_scale_is_the_pooled_within_agent_standard_deviation():
    rng = np.random.default_rng(0)
    samples = [rng.normal(mean, std, size=n) for mean, std, n in [(0.0, 1.0, 50), (5.0, 10.0, 30), (-2.0, 0.1, 20)]]
    moments = np.concatenate([fedmath.advantage_moments(x[None]) for x in samples])
    within = sum(((x - x.mean()) ** 2).sum() for x in samples) / (sum(x.size for x in samples) - len(samples))
    assert fedmath.shared_advantage_scale(moments) == pytest.approx(np.sqrt(within))
    # moments add up over batches; the participants' only count; the agents' ratios are their own scales
    twice = fedmath.advantage_moments(np.stack([samples[0][:20], samples[0][20:40]]))
    assert twice[:, 2].tolist() == [1.0, 1.0]
    mask = np.array([True, False, True])
    kept = np.concatenate([samples[0], samples[2]])
    within_kept = (((samples[0] - samples[0].mean()) ** 2).sum() + ((samples[2] - samples[2].mean()) ** 2).sum()) / (
        kept.size - 2
    )
    assert fedmath.shared_advantage_scale(moments, mask) == pytest.approx(np.sqrt(within_kept))
    ratios = fedmath.advantage_ratios(moments, 2.0)
    np.testing.assert_allclose(ratios, [x.std(ddof=1) / 2.0 for x in samples], rtol=1e-6)
    assert fedmath.shared_advantage_scale(np.array([[1.0, 0.0, 1.0]])) is None  # one sample: no scale


def test_scaled_anchors_travel_as_one_vector():
    policy, entropy = th.randn(3, 5), th.randn(3, 5)
    moments = th.tensor([[10.0, 9.0, 1.0], [10.0, 36.0, 1.0], [10.0, 0.0, 1.0]], dtype=th.float64)
    parts = fedmath.ScaledAnchors(policy, entropy, moments)
    back = fedmath.ScaledAnchors.from_vector(parts.vector(), 5, moments)
    anchors, scale = fedmath.assemble_anchors(back)
    assert scale == pytest.approx(np.sqrt(45.0 / 27.0))
    th.testing.assert_close(anchors, policy / scale + entropy)
    # without an entropy bonus the agents send p_i only
    assert fedmath.ScaledAnchors(policy, None, moments).vector().shape == (3, 5)
    numpy_anchors, numpy_scale = fedmath.assemble_anchors(
        fedmath.ScaledAnchors.from_vector(parts.vector().numpy(), 5, moments.numpy())
    )
    np.testing.assert_allclose(numpy_anchors, anchors.numpy(), rtol=1e-6)
    assert numpy_scale == scale


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
def test_with_one_agent_shared_is_sb3_s_own_normalisation(algo):
    # One agent: the pooled scale is its own standard deviation, so the assembled anchor is the per-agent one.
    anchors = {}
    for mode in ("shared", "per_agent"):
        model = algo("MlpPolicy", "CartPole-v1", n_agents=1, n_envs_per_agent=4, n_steps=16, ent_coef=0.01, seed=5)
        model.normalize_advantage = mode
        model._setup_model()
        model._setup_learn(1_000)
        solver = model.local_solver(model._round_callback(None), 1e-3)
        anchors[mode], scale = fedmath.solver_anchors(solver, model.get_global_parameters(), 1)
        assert (scale is not None) == (mode == "shared")
    th.testing.assert_close(anchors["shared"], anchors["per_agent"], rtol=1e-4, atol=1e-6)

"""
The batched actor samples from the policy's own distribution (SB3's, with each agent's parameters loaded),
on the NumPy rollout path and the torch path, for Discrete, Box, MultiDiscrete and MultiBinary actions: chi-square
and KS tests.
"""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from scipy import stats
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_fedpg.common.batched_policy import BatchedActor

N_AGENTS, N_OBS, N_DRAWS = 2, 3, 20_000


def make_actor(action_space):
    th.manual_seed(0)
    policy = ActorCriticPolicy(spaces.Box(-1, 1, (4,)), action_space, lambda _: 1e-3, net_arch=[16])
    actor = BatchedActor(policy)
    base = actor.get_vector()
    gen = th.Generator().manual_seed(1)
    # scaled up so that the action distributions are far from uniform / standard
    params = th.stack([base * 3 + 0.3 * th.randn(base.shape, generator=gen) for _ in range(N_AGENTS)])
    if actor.log_std is not None:
        params[:, actor.log_std] = th.tensor([[0.4, -0.6], [-0.5, 0.3]])
    obs = th.randn(N_AGENTS, N_OBS, 4, generator=gen)
    return policy, actor, params, obs


def sb3_distribution(policy, actor, params_row, obs_row):
    """The policy's own distribution (SB3 code path) with one agent's parameters loaded."""
    actor.set_vector(params_row)
    with th.no_grad():
        return policy.get_distribution(obs_row).distribution


def draw(actor, params, obs, path):
    # repeat every observation N_DRAWS times: (n, N_OBS * N_DRAWS, 4)
    obs_rep = obs.repeat_interleave(N_DRAWS, dim=1)
    if path == "numpy":
        out = actor.sample_numpy(params.numpy(), obs_rep.numpy(), np.random.default_rng(2))
    else:
        th.manual_seed(2)
        out = actor.sample(params, obs_rep).numpy()
    return out.reshape(N_AGENTS, N_OBS, N_DRAWS, *out.shape[2:])


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_discrete_samples_follow_the_policy(path):
    policy, actor, params, obs = make_actor(spaces.Discrete(5))
    samples = draw(actor, params, obs, path)
    for i in range(N_AGENTS):
        for j in range(N_OBS):
            probs = sb3_distribution(policy, actor, params[i], obs[i, j : j + 1]).probs[0].numpy().astype(np.float64)
            assert probs.max() > 0.25 and probs.min() < 0.15  # far from uniform (0.2 each)
            counts = np.bincount(samples[i, j], minlength=5)
            p_value = stats.chisquare(counts, probs / probs.sum() * N_DRAWS).pvalue
            assert p_value > 1e-4, (i, j, counts, probs * N_DRAWS)


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_box_samples_follow_the_policy(path):
    policy, actor, params, obs = make_actor(spaces.Box(-1, 1, (2,)))
    samples = draw(actor, params, obs, path)
    for i in range(N_AGENTS):
        for j in range(N_OBS):
            dist = sb3_distribution(policy, actor, params[i], obs[i, j : j + 1])
            mean, std = dist.mean[0].numpy(), dist.stddev[0].numpy()
            assert np.all(np.abs(std - 1.0) > 0.2)  # std far from 1: a wrong scale would show
            z = (samples[i, j] - mean) / std
            for d in range(2):
                assert stats.kstest(z[:, d], "norm").pvalue > 1e-4, (i, j, d)


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_multi_discrete_samples_follow_the_policy(path):
    nvec = (3, 5, 2)
    policy, actor, params, obs = make_actor(spaces.MultiDiscrete(nvec))
    samples = draw(actor, params, obs, path)
    assert samples.shape[-1] == len(nvec)
    for i in range(N_AGENTS):
        for j in range(N_OBS):
            dists = sb3_distribution(policy, actor, params[i], obs[i, j : j + 1])
            for d, (dist, k) in enumerate(zip(dists, nvec, strict=True)):
                probs = dist.probs[0].numpy().astype(np.float64)
                counts = np.bincount(samples[i, j, :, d], minlength=k)
                assert len(counts) == k  # no sample outside the dimension's range (the padding is never drawn)
                assert stats.chisquare(counts, probs / probs.sum() * N_DRAWS).pvalue > 1e-4, (i, j, d, counts)


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_multi_binary_samples_follow_the_policy(path):
    policy, actor, params, obs = make_actor(spaces.MultiBinary(3))
    samples = draw(actor, params, obs, path)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    z_scores = []
    for i in range(N_AGENTS):
        for j in range(N_OBS):
            probs = sb3_distribution(policy, actor, params[i], obs[i, j : j + 1]).probs[0].numpy().astype(np.float64)
            assert np.abs(probs - 0.5).max() > 0.1  # far from fair coins
            z_scores += list((samples[i, j].mean(0) - probs) / np.sqrt(probs * (1 - probs) / N_DRAWS))
    # One chi-square over all 18 coins (each z is ~N(0, 1) under the policy's law).
    assert stats.chi2.sf(np.sum(np.square(z_scores)), len(z_scores)) > 1e-4, np.round(z_scores, 2)


SPACES = [spaces.Discrete(5), spaces.Box(-1, 1, (2,)), spaces.MultiDiscrete([3, 5, 2]), spaces.MultiBinary(3)]


@pytest.mark.parametrize("action_space", SPACES, ids=lambda space: type(space).__name__)
def test_batched_log_prob_is_the_policy_log_prob(action_space):
    policy, actor, params, obs = make_actor(action_space)
    actions = th.as_tensor(draw(actor, params, obs, "numpy")[:, :, 0])
    dist = actor.distribution(params, obs)
    batched, batched_entropy = dist.log_prob(actions), dist.entropy()
    for i in range(N_AGENTS):
        actor.set_vector(params[i])
        with th.no_grad():
            sb3_dist = policy.get_distribution(obs[i])  # SB3's wrapper sums over action dimensions
        th.testing.assert_close(batched[i], sb3_dist.log_prob(actions[i]), rtol=1e-5, atol=1e-5)
        th.testing.assert_close(batched_entropy[i], sb3_dist.entropy(), rtol=1e-5, atol=1e-5)

"""
``share_features_extractor=True`` with an extractor that has parameters (SB3's ``test_cnn.py::test_cnn[True-...]``):
SB3 trains one extractor for the actor and the critic; here the actor's is federated (averaged across agents) and
every agent's critic reads its own copy of it, initialised from the same weights, trained locally, never averaged.
"""

import warnings

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM
from sb3_fedpg.common import federated_algorithm
from sb3_fedpg.common.federated_algorithm import FederatedDifferenceWarning

ENV = "sb3_fedpg/HeteroCartPole-v0"


class LinearExtractor(BaseFeaturesExtractor):
    """A features extractor with parameters: one linear layer."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 8) -> None:
        super().__init__(observation_space, features_dim)
        self.linear = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(observation_space.shape)), features_dim), nn.Tanh())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(observations)


class LinearBatchNormExtractor(LinearExtractor):
    """The same with batch norm after the linear layer (parameters and running statistics)."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 8) -> None:
        super().__init__(observation_space, features_dim)
        self.linear.insert(2, nn.BatchNorm1d(features_dim))


def shared(algo, extractor=LinearExtractor, **kwargs):
    settings = {"n_agents": 2, "n_envs_per_agent": 2, "n_steps": 8, "seed": 0}
    if algo is FederatedPPO:
        settings.update(batch_size=8, n_epochs=2)
    if algo is FederatedSVRPGM:
        settings.update(estimator="gae", local_steps=2)
    policy_kwargs = {"net_arch": [8], "features_extractor_class": extractor, "share_features_extractor": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FederatedDifferenceWarning)
        return algo("MlpPolicy", ENV, policy_kwargs=policy_kwargs, **{**settings, **kwargs})


def extractor_size(model) -> int:
    return sum(p.numel() for p in model.policy.features_extractor.parameters())


def test_the_separate_critic_copy_is_announced_once(monkeypatch):
    monkeypatch.setattr(federated_algorithm, "_differences_announced", set())
    policy_kwargs = {"features_extractor_class": LinearExtractor, "share_features_extractor": True}
    with pytest.warns(FederatedDifferenceWarning, match=r"every agent's critic reads its own copy of the extractor"):
        FederatedPG("MlpPolicy", ENV, n_agents=2, n_envs_per_agent=1, policy_kwargs=policy_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FederatedDifferenceWarning)
        FederatedPG("MlpPolicy", ENV, n_agents=2, n_envs_per_agent=1, policy_kwargs=policy_kwargs)  # once per process


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO, FederatedSVRPGM])
@pytest.mark.parametrize("extractor", [LinearExtractor, LinearBatchNormExtractor])
def test_the_actor_extractor_is_averaged_and_each_critic_trains_its_own_copy(algo, extractor):
    model = shared(algo, extractor)
    policy = model.policy
    assert policy.share_features_extractor and policy.vf_features_extractor is policy.pi_features_extractor
    k = extractor_size(model)
    initial = model.get_global_parameters()[:k]
    critics_initial = model.critics.params.detach()[:, :k].clone()
    for row in critics_initial:  # every critic starts from the same weights as the actor
        assert th.equal(row, initial)
    model.learn(2 * model.steps_per_round)
    actor = model.get_global_parameters()[:k]
    assert not th.allclose(actor, initial)
    # the actor's extractor is the average of the agents' (η_g = 1, mean aggregator): the policy's own module holds it
    round_ = model.last_round
    np.testing.assert_allclose(actor, round_.local_params[:, :k].mean(0), rtol=1e-5, atol=1e-7)
    assert th.equal(nn.utils.parameters_to_vector(policy.features_extractor.parameters()).detach(), actor)
    # every critic's copy trained locally: away from its start, from the actor's and from the other agent's
    critics = model.critics.params.detach()[:, :k]
    assert not th.allclose(critics[0], critics_initial[0])
    assert not th.allclose(critics[0], critics[1])
    assert not th.allclose(critics[0], actor) and not th.allclose(critics[1], actor)
    if extractor is LinearBatchNormExtractor:  # the critics' running statistics are theirs too, never averaged
        rows = model.critics.buffer_rows.rows()
        norm = policy.features_extractor.linear[2]
        assert not th.allclose(rows["linear.2.running_mean"][0], rows["linear.2.running_mean"][1])
        assert not th.allclose(rows["linear.2.running_mean"][0], norm.running_mean)


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
def test_save_and_load_keep_the_sharing_and_the_critic_copies(algo, tmp_path):
    model = shared(algo, LinearBatchNormExtractor)
    model.learn(model.steps_per_round)
    model.save(tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FederatedDifferenceWarning)
        loaded = algo.load(tmp_path / "model", env=model.get_env())
    assert loaded.policy.share_features_extractor
    assert loaded.policy.vf_features_extractor is loaded.policy.pi_features_extractor
    assert th.equal(loaded.critics.params, model.critics.params)
    for name, value in model.critics.buffer_rows.rows().items():
        assert th.equal(loaded.critics.buffer_rows.rows()[name], value)
    obs = model.env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    np.testing.assert_allclose(model.predict_agent_values(obs), loaded.predict_agent_values(obs))

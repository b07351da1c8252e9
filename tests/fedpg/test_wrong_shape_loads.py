"""A model is bound to its agents (one critic and optimiser state each): loads onto another split are refused clearly."""

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_fedpg import FederatedPG, make_federated_vec_env

FAMILY = "sb3_fedpg/HeteroCartPole-v0"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.zip"
    model = FederatedPG("MlpPolicy", FAMILY, n_agents=4, n_envs_per_agent=2, n_steps=4, local_steps=1, seed=0)
    model.learn(64)
    model.save(path)
    return path


def test_load_onto_a_federated_env_of_another_split_is_refused(saved):
    before = saved.read_bytes()
    env = make_federated_vec_env(FAMILY, n_agents=2, n_envs_per_agent=4)  # same 8 envs, 2 agents
    with pytest.raises(ValueError, match=r"2 agents x 4 envs each, but the model has 4 agents x 2 envs each.*n_agents=4"):
        FederatedPG.load(saved, env=env)
    assert saved.read_bytes() == before


def test_set_env_with_another_split_is_refused(saved):
    model = FederatedPG.load(saved)
    with pytest.raises(ValueError, match=r"2 agents x 4 envs each, but the model has 4 agents x 2 envs each"):
        model.set_env(make_federated_vec_env(FAMILY, n_agents=2, n_envs_per_agent=4))
    with pytest.raises(ValueError, match=r"6 sub-environments, which cannot be split between the model's 4 agents"):
        model.set_env(make_vec_env("CartPole-v1", n_envs=6))


def test_same_agents_other_envs_per_agent_is_accepted(saved):
    model = FederatedPG.load(saved, env=make_federated_vec_env(FAMILY, n_agents=4, n_envs_per_agent=3))
    assert (model.n_agents, model.n_envs_per_agent) == (4, 3)
    model.learn(48, reset_num_timesteps=False)
    model.set_env(make_federated_vec_env(FAMILY, n_agents=4, n_envs_per_agent=1))  # SB3 asserted the same count
    assert (model.n_envs, model.n_envs_per_agent) == (4, 1)
    model.learn(16, reset_num_timesteps=False)


def test_plain_env_of_another_size_predicts_but_refuses_to_train_clearly(saved):
    model = FederatedPG.load(saved, env=make_vec_env("CartPole-v1", n_envs=6))
    obs = model.env.reset()
    assert model.predict(obs)[0].shape == (6,)  # prediction does not need the split
    with pytest.raises(ValueError, match=r"6 sub-environments, which cannot be split between the model's 4 agents"):
        model.learn(100)
    assert model.num_timesteps == 64


def test_load_kwargs_cannot_change_the_agents_or_invent_settings(saved):
    before = saved.read_bytes()
    with pytest.raises(ValueError, match=r"n_agents=2 cannot be set by load\(\): .* holds 4 agents"):
        FederatedPG.load(saved, n_agents=2)
    with pytest.raises(TypeError, match=r"unknown keyword argument 'lerning_rate'.*did you mean 'learning_rate'"):
        FederatedPG.load(saved, lerning_rate=0.1)
    assert saved.read_bytes() == before
    model = FederatedPG.load(saved, n_agents=4, learning_rate=0.01, verbose=0)
    assert model.learning_rate == 0.01
    th.testing.assert_close(model.critics.params.shape[0], 4)

"""The federated policy has no global critic: ``predict_values`` refuses; each agent's own critic answers instead."""

import numpy as np
import pytest
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_fedpg import FederatedPG, FederatedPPO, make_federated_vec_env
from sb3_fedpg.common.policies import FederatedActorCriticPolicy


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
def test_predict_values_refuses_and_names_the_trained_critics(algo, tmp_path):
    model = algo("MlpPolicy", "CartPole-v1", n_agents=2, n_envs_per_agent=2, n_steps=8)
    assert isinstance(model.policy, FederatedActorCriticPolicy)
    obs = model.policy.obs_to_tensor(model.env.reset())[0]
    with pytest.raises(NotImplementedError, match=r"no global critic.*model.predict_agent_values"):
        model.policy.predict_values(obs)
    # also on the policy saved and loaded alone
    model.policy.save(tmp_path / "policy.pth")
    with pytest.raises(NotImplementedError, match="no global critic"):
        FederatedActorCriticPolicy.load(tmp_path / "policy.pth").predict_values(obs)


def test_other_policy_classes_warn_that_their_value_head_is_untrained():
    with pytest.warns(UserWarning, match="predict_values answers from an untrained value head"):
        FederatedPG(ActorCriticPolicy, "CartPole-v1", n_steps=8)


def test_agent_values_follow_each_agents_own_reward():
    # Same dynamics; agent 1's reward is ten times agent 0's: its trained critic must say so.
    env = make_federated_vec_env(
        "CartPole-v1", n_envs_per_agent=4, reward_fns=[lambda o, a, n, r: r, lambda o, a, n, r: 10 * r]
    )
    model = FederatedPG("MlpPolicy", env, n_steps=32, critic_learning_rate=1e-2, gamma=0.9, seed=0)
    obs = env.reset()
    before = model.predict_agent_values(obs)
    assert before.shape == (2, 8)
    np.testing.assert_allclose(before[0], before[1])  # both critics start from the same weights
    model.learn(6000)
    values = model.predict_agent_values(obs).mean(axis=1)
    assert values[0] > 1 and values[1] > 2 * values[0], values  # (true values: about 10 and 100)

"""FederatedA2C: SB3 A2C's defaults on FederatedPG (the preset an A2C user switches to)."""

import inspect

import numpy as np
import pytest
import torch as th
from stable_baselines3 import A2C
from stable_baselines3.common.envs import IdentityEnvBox
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_fedpg import FederatedA2C, FederatedPG
from sb3_fedpg.common.hyperparams import FedA2CHyperparams, HyperparameterError

FAMILY = "sb3_fedpg/HeteroPointMass-v0"


def small():
    # a fresh policy_kwargs each time: FederatedA2C, like A2C, writes its optimiser into the dict it is given
    return dict(n_agents=2, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]))


def test_defaults_are_a2cs_where_a2c_has_the_setting():
    ours = inspect.signature(FederatedA2C.__init__).parameters
    theirs = inspect.signature(A2C.__init__).parameters
    shared = set(ours) & set(theirs) - {"self", "policy", "env", "policy_kwargs", "device", "_init_setup_model"}
    assert {"learning_rate", "n_steps", "gae_lambda", "normalize_advantage", "max_grad_norm", "use_rms_prop"} <= shared
    for name in shared:
        assert ours[name].default == theirs[name].default, name
    # the critic steps as far as the actor, as A2C's one optimiser steps both
    assert ours["critic_learning_rate"].default == theirs["learning_rate"].default


def test_the_local_optimiser_is_a2cs_rmsprop_on_actor_rows_and_critics():
    a2c = A2C("MlpPolicy", "CartPole-v1").policy.optimizer
    model = FederatedA2C("MlpPolicy", "CartPole-v1", **small())
    for optimizer in (model.local_optimizer_state.optimizer, model.critic_optimizer.optimizer):
        assert type(optimizer) is type(a2c) is th.optim.RMSprop
        for key in ("alpha", "eps", "weight_decay", "momentum", "centered"):
            assert optimizer.defaults[key] == a2c.defaults[key], key
    model.learn(model.steps_per_round)
    states = [model.local_optimizer_state.optimizer.state[leaf] for leaf in model.local_optimizer_state.leaves]
    assert len(states) == 2 and all(float(s["square_avg"].abs().sum()) > 0 for s in states)  # each agent's own


def test_use_rms_prop_false_and_a_users_optimiser_as_in_a2c():
    adam = FederatedA2C("MlpPolicy", "CartPole-v1", use_rms_prop=False, **small()).local_optimizer_state.optimizer
    assert type(adam) is th.optim.Adam and adam.defaults["eps"] == 1e-5  # the policy's default optimiser in SB3
    eps = FederatedA2C("MlpPolicy", "CartPole-v1", rms_prop_eps=1e-3, **small()).local_optimizer_state.optimizer
    assert eps.defaults["eps"] == 1e-3
    kwargs = {**small(), "policy_kwargs": dict(net_arch=[16], optimizer_class=th.optim.SGD)}
    assert type(FederatedA2C("MlpPolicy", "CartPole-v1", **kwargs).local_optimizer_state.optimizer) is th.optim.SGD
    built_in = FederatedA2C("MlpPolicy", "CartPole-v1", local_optimizer="adam", **small())
    assert type(built_in.local_optimizer_state).__name__ == "LocalAdam" and "optimizer_class" not in built_in.policy_kwargs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(use_rms_prop="yes"), "use_rms_prop must be True or False"),
        (dict(rms_prop_eps=0.0), "rms_prop_eps must be"),
        (dict(n_steps=0), "n_steps must be a positive integer"),
    ],
)
def test_invalid_settings_are_refused_before_anything_is_built(kwargs, message):
    with pytest.raises(HyperparameterError, match=message):
        FederatedA2C("MlpPolicy", "CartPole-v1", **kwargs)


@pytest.mark.filterwarnings("ignore:learn\\(320\\) runs 1 whole round")  # FederatedPG's defaults: a 1024-step round
def test_it_is_federatedpg_with_other_defaults():
    # the preset changes defaults only: FederatedPG given the same settings trains to the same parameters
    a2c = FederatedA2C("MlpPolicy", FAMILY, seed=3, **small()).learn(320)
    settings = {name: getattr(a2c, name) for name in FedA2CHyperparams.names() if name not in small()}
    pg = FederatedPG("MlpPolicy", FAMILY, seed=3, **{**small(), **settings, "policy_kwargs": a2c.policy_kwargs}).learn(320)
    th.testing.assert_close(pg.get_global_parameters(), a2c.get_global_parameters(), rtol=0, atol=0)
    assert (
        FederatedPG("MlpPolicy", FAMILY, seed=3, **small())
        .learn(320)
        .get_global_parameters()
        .ne(a2c.get_global_parameters())
        .any()
    )


def test_save_load_keeps_the_preset_and_its_optimiser_state(tmp_path):
    model = FederatedA2C("MlpPolicy", FAMILY, seed=0, rms_prop_eps=1e-4, **small()).learn(200)
    model.save(tmp_path / "a2c.zip")
    loaded = FederatedA2C.load(tmp_path / "a2c.zip", env=model.env)
    assert loaded.rms_prop_eps == 1e-4 and loaded.n_steps == 5 and loaded.learning_rate == 7e-4
    saved, restored = model.local_optimizer_state.state_dict(), loaded.local_optimizer_state.state_dict()
    for i in saved["state"]:
        th.testing.assert_close(restored["state"][i]["square_avg"], saved["state"][i]["square_avg"])
    obs = model.env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="holds a FederatedA2C model"):
        FederatedPG.load(tmp_path / "a2c.zip")


def test_learns_sb3s_continuous_identity_task_at_a2cs_test_budget():
    # SB3's tests/test_identity.py::test_continuous for A2C (seed 0, 2000 steps), where FederatedPG's defaults reach ~50
    env = IdentityEnvBox(eps=0.5)
    policy_kwargs = dict(net_arch=[64, 64], log_std_init=-0.5)
    model = FederatedA2C("MlpPolicy", env, gamma=0.95, learning_rate=1e-3, policy_kwargs=policy_kwargs, seed=0)
    model.learn(2000)
    assert evaluate_policy(model, env, n_eval_episodes=20, warn=False)[0] >= 90


def test_load_with_the_same_policy_kwargs_dict_as_a2c(tmp_path):
    # SB3's test_save_load_env_cnn: A2C writes its optimiser into the given policy_kwargs, and load compares them
    kwargs = dict(policy_kwargs=dict(net_arch=[16]))
    FederatedA2C("MlpPolicy", "CartPole-v1", **kwargs).save(tmp_path / "model.zip")
    assert kwargs["policy_kwargs"]["optimizer_class"] is th.optim.RMSprop
    FederatedA2C.load(tmp_path / "model.zip", **kwargs)

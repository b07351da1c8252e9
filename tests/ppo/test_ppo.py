"""FederatedPPO: learns, pins its math to the policy gradient at θ̄, and behaves like an SB3 algorithm."""

import copy
import dataclasses

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.envs import IdentityEnvMultiDiscrete

from sb3_fedpg import FederatedPG, FederatedPPO, make_federated_vec_env
from sb3_fedpg.common.evaluation import evaluate_agents
from sb3_fedpg.common.hyperparams import FedPPOHyperparams
from sb3_fedpg.ppo.local_solver import PPOEpochs, PPOSettings

SMALL = dict(n_steps=16, batch_size=32, n_epochs=2, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]))


def small(env_id="sb3_fedpg/HeteroCartPole-v0", n_agents=3, seed=0, **kwargs):
    return FederatedPPO("MlpPolicy", env_id, n_agents=n_agents, seed=seed, **{**SMALL, **kwargs})


def settings(model, correction=False):
    return PPOSettings(
        learning_rate=1e-3,
        clip_range=0.2,
        clip_range_vf=None,
        n_epochs=model.n_epochs,
        batch_size=model.batch_size,
        gamma=model.gamma,
        gae_lambda=model.gae_lambda,
        normalize_advantage=True,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=None,
        target_kl=None,
        correction=correction,
    )


@pytest.mark.parametrize("env_id", ["sb3_fedpg/HeteroCartPole-v0", "sb3_fedpg/HeteroPendulum-v0"])
@pytest.mark.parametrize("correction", [False, True])
def test_trains_on_discrete_and_box(env_id, correction):
    model = small(env_id, correction=correction)
    before = model.get_global_parameters()
    model.learn(300)
    assert model.num_timesteps >= 300 and model.last_round is not None
    assert not th.allclose(before, model.get_global_parameters())


def test_anchor_is_the_policy_gradient_at_the_global_parameters():
    # At θ̄ the clipped surrogate's gradient is mean(Â ∇log π): FederatedPG's GAE gradient with the same critic.
    ppo = small(n_agents=2, seed=1)
    pg = FederatedPG(
        "MlpPolicy",
        "sb3_fedpg/HeteroCartPole-v0",
        n_agents=2,
        seed=1,
        n_steps=16,
        n_envs_per_agent=2,
        policy_kwargs=SMALL["policy_kwargs"],
    )
    pg.set_global_parameters(ppo.get_global_parameters())
    pg.critics.load_state_dict(ppo.critics.state_dict())
    ppo._setup_learn(1, None)
    callback = CallbackList([])
    callback.init_callback(ppo)
    captured = {}

    def sample(params):
        captured["batch"] = ppo.collect_batch(params, callback, keep_truncations=True)
        return captured["batch"]

    solver = PPOEpochs(ppo._actor, ppo.critics, ppo.critic_optimizer, ppo.actor_optimizer, settings(ppo), sample)
    theta = ppo.get_global_parameters()
    anchors = solver.anchor(theta, 2)
    batch = captured["batch"]
    expected = pg.learner.gradients(theta.unsqueeze(0).repeat(2, 1), batch)  # (the critic step comes after the weights)
    th.testing.assert_close(anchors, expected, rtol=1e-4, atol=1e-6)


def test_local_epochs_ascend_each_agents_surrogate_and_the_correction_enters():
    model = small(n_agents=2, seed=2, n_epochs=4)
    model._setup_learn(1, None)
    callback = CallbackList([])
    callback.init_callback(model)
    theta = model.get_global_parameters()
    out = {}
    for correction in (False, True):
        th.manual_seed(0)
        model.set_random_seed(0)
        solver = PPOEpochs(
            model._actor,
            model.critics,
            model.critic_optimizer,
            model.actor_optimizer,
            settings(model, correction),
            lambda p: model.collect_batch(p, callback, keep_truncations=True),
        )
        anchors = solver.anchor(theta, 2)
        data = solver._data
        local = solver.local_round(theta, anchors, anchors.mean(0))
        with th.no_grad():
            adv = data["advantages"]
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
            ratio = th.exp(model._actor.distribution(local, data["obs"]).log_prob(data["actions"]) - data["old_log_prob"])
            gain = (ratio * adv).mean(1)  # surrogate at θ_i minus its value (0) at θ̄
        assert bool((gain > 0).all()), gain  # every agent improved its own surrogate
        out[correction] = local
    assert not th.allclose(out[False], out[True])  # g − a_i changed the local solutions


def test_learns_heterogeneous_cartpole():
    th.set_num_threads(1)
    model = FederatedPPO(
        "MlpPolicy",
        "sb3_fedpg/HeteroCartPole-v0",
        n_agents=4,
        n_envs_per_agent=8,
        n_steps=32,
        learning_rate=1e-3,
        env_kwargs={"heterogeneity": 1.0},
        seed=0,
    )
    env = make_federated_vec_env("sb3_fedpg/HeteroCartPole-v0", n_agents=4, n_envs_per_agent=4, seed=9)
    start = evaluate_agents(model, env, deterministic=False).mean()
    model.learn(30_000)
    end = evaluate_agents(model, env, deterministic=False).mean()
    assert end > start + 80, (start, end)


def test_determinism_and_save_load(tmp_path):
    params = []
    for _ in range(2):
        model = small(seed=5)
        model.learn(400)
        params.append(model.get_global_parameters())
    th.testing.assert_close(params[0], params[1], rtol=0, atol=0)
    model.save(tmp_path / "ppo")
    loaded = FederatedPPO.load(tmp_path / "ppo.zip", env=model.get_env())
    th.testing.assert_close(loaded.get_global_parameters(), params[1])
    th.testing.assert_close(loaded.critics.params, model.critics.params)
    th.testing.assert_close(loaded.actor_optimizer.exp_avg, model.actor_optimizer.exp_avg)
    obs = model.get_env().reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_checkpoint_resume_is_bit_identical(tmp_path):
    straight = small(seed=4)
    straight.learn(800)
    first = small(seed=4)
    first.learn(400)
    first.save_checkpoint(tmp_path / "ckpt.zip")
    resumed = FederatedPPO.load_checkpoint(tmp_path / "ckpt.zip")
    resumed.learn(800 - resumed.num_timesteps, reset_num_timesteps=False)
    th.testing.assert_close(resumed.get_global_parameters(), straight.get_global_parameters(), rtol=0, atol=0)


def test_signature_follows_the_one_definition_and_rejects_bad_values(tmp_path):
    import inspect

    params = inspect.signature(FederatedPPO.__init__).parameters
    for name, default in FedPPOHyperparams.defaults().items():
        assert params[name].default == default, name
        assert f":param {name}:" in FederatedPPO.__doc__, name
    for kwargs, message in [
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(n_epochs=1.5), "n_epochs must be a positive integer"),
        (dict(clip_range=-0.1), "clip_range must be a finite number > 0"),
        (dict(correction="yes"), "correction must be False, True"),
    ]:
        with pytest.raises(ValueError, match=message):
            small(**kwargs)
    path = tmp_path / "m.zip"
    small().save(path)
    with pytest.raises(ValueError, match="target_kl must be a finite number > 0"):
        FederatedPPO.load(path, target_kl=-1.0)


@pytest.mark.parametrize("env_id", ["sb3_fedpg/HeteroCartPole-v0", "sb3_fedpg/HeteroPendulum-v0"])
def test_autograd_fallback_equals_hand_written_backward(env_id):
    # Where both apply (flat observations, MLP without Dropout, Discrete/Box), the autograd path that CNN,
    # Dropout and MultiDiscrete/MultiBinary policies train through gives the same round.
    model = small(env_id, n_agents=2, seed=2, n_epochs=3)
    model._setup_learn(1, None)
    callback = CallbackList([])
    callback.init_callback(model)
    batch = model.collect_batch(model.get_global_parameters().unsqueeze(0).repeat(2, 1), callback, keep_truncations=True)
    theta = model.get_global_parameters()
    ppo_settings = dataclasses.replace(
        settings(model, correction=True), clip_range_vf=0.1, ent_coef=0.01, max_grad_norm=0.5, target_kl=0.01
    )
    out = {}
    for hand_written in (True, False):
        critics, critic_opt, actor_opt = (
            copy.deepcopy(x) for x in (model.critics, model.critic_optimizer, model.actor_optimizer)
        )
        solver = PPOEpochs(model._actor, critics, critic_opt, actor_opt, ppo_settings, lambda p: copy.deepcopy(batch))
        assert solver.hand_written
        solver.hand_written = hand_written
        anchors = solver.anchor(theta, 2)
        th.manual_seed(0)
        local = solver.local_round(theta, anchors, anchors.mean(0))
        out[hand_written] = (anchors, local, critics.params.detach(), actor_opt.exp_avg, solver.stats.means())
    for fast, slow in zip(out[True][:4], out[False][:4], strict=True):
        th.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    for key, value in out[True][4].items():
        assert value == pytest.approx(out[False][4][key], rel=1e-4, abs=1e-6), key


def test_multidiscrete_trains_through_the_autograd_fallback():
    env = make_federated_vec_env([lambda: IdentityEnvMultiDiscrete(4)] * 2, n_envs_per_agent=2, seed=0)
    model = FederatedPPO("MlpPolicy", env, seed=0, **SMALL)
    assert not model._actor.hand_backward_ready
    before = model.get_global_parameters()
    model.learn(200)
    assert model.last_round is not None and not th.allclose(before, model.get_global_parameters())

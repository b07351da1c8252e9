import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import (
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_fedpg import FederatedPG, make_federated_vec_env

SMALL = dict(n_steps=8, local_steps=2, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]))


def small_model(env_id="sb3_fedpg/HeteroCartPole-v0", n_agents=3, seed=0, **kwargs):
    return FederatedPG("MlpPolicy", env_id, n_agents=n_agents, seed=seed, **{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "env_id", ["sb3_fedpg/HeteroCartPole-v0", "sb3_fedpg/HeteroPendulum-v0", "CartPole-v1", "Pendulum-v1"]
)
@pytest.mark.parametrize("estimator", ["gae", "gpomdp", "reinforce"])
def test_learns_on_discrete_and_box(env_id, estimator):
    model = small_model(env_id, estimator=estimator)
    before = model.get_global_parameters()
    model.learn(300)
    assert model.num_timesteps >= 300
    assert not th.allclose(before, model.get_global_parameters())
    obs = model.get_env().reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape[0] == obs.shape[0]


def test_drop_in_env_id_and_plain_vec_env():
    model = FederatedPG("MlpPolicy", "CartPole-v1", **SMALL)
    assert model.n_agents == 1
    model.learn(100)
    plain = DummyVecEnv([lambda: gym.make("CartPole-v1") for _ in range(4)])
    model = FederatedPG("MlpPolicy", plain, n_agents=2, n_steps=4, local_steps=2)
    assert model.n_envs_per_agent == 2
    model.learn(100)


def test_one_local_step_is_centralised_pg():
    for correction in (True, False):
        model = small_model(local_steps=1, correction=correction, learning_rate=0.05)
        before = model.get_global_parameters()
        model.learn(1)  # one round
        step = model.get_global_parameters() - before
        # With H = 1 the global step is η · mean_i a_i: plain PG on the pooled gradients.
        th.testing.assert_close(step, 0.05 * model.last_round.global_grad.float(), rtol=1e-5, atol=1e-6)


def test_correction_changes_the_update_only_when_agents_differ():
    def round_change(heterogeneity, correction):
        model = small_model(env_kwargs={"heterogeneity": heterogeneity}, correction=correction, seed=3)
        before = model.get_global_parameters()
        model.learn(1)
        return model.get_global_parameters() - before, model.last_round

    change_fast, result = round_change(1.0, True)
    change_avg, _ = round_change(1.0, False)
    assert result.correction_norm > 0
    assert not th.allclose(change_fast, change_avg)


@pytest.mark.parametrize("correction", [True, False])
def test_in_process_round_wires_the_correction_and_the_anchor_reuse(correction):
    # H = 2 with the anchor batch reused: the first local step is η·g (correction) or η·a_i (FedAvg-PG), the
    # second η·(ĝ_i(θ_{i,1}) − a_i + g) or η·ĝ_i(θ_{i,1}). Check the first step exactly from what the round
    # returns: θ_{i,2} − θ_{i,1} is then the second direction, whose correction term is known.
    model = small_model(local_steps=1, correction=correction, learning_rate=0.05)
    before = model.get_global_parameters()
    model.learn(1)
    res = model.last_round
    first = res.global_grad.unsqueeze(0).expand_as(res.anchor_grads) if correction else res.anchor_grads
    th.testing.assert_close(res.local_params - before, 0.05 * first, rtol=1e-5, atol=1e-7)
    # one round with reuse costs H batches of n_envs × n_steps env steps
    assert model.num_timesteps == 1 * model.n_envs * model.n_steps


@pytest.mark.parametrize("reuse, batches", [(True, 3), (False, 4)])
def test_a_round_costs_H_batches_with_anchor_reuse_and_H_plus_1_without(reuse, batches):
    model = small_model(local_steps=3, reuse_anchor_batch=reuse)
    model.learn(1)
    assert model.num_timesteps == batches * model.n_envs * model.n_steps


def test_determinism():
    params = []
    for _ in range(2):
        model = small_model(seed=7)
        model.learn(400)
        params.append(model.get_global_parameters())
    th.testing.assert_close(params[0], params[1], rtol=0, atol=0)
    other = small_model(seed=8)
    other.learn(400)
    assert not th.allclose(params[0], other.get_global_parameters())


def test_save_load_round_trip(tmp_path):
    model = small_model()
    model.learn(300)
    obs = model.get_env().reset()
    expected, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    loaded = FederatedPG.load(tmp_path / "model.zip")
    actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    th.testing.assert_close(loaded.get_global_parameters(), model.get_global_parameters())
    th.testing.assert_close(loaded.critics.params, model.critics.params)
    assert loaded.n_agents == 3 and loaded.local_steps == 2
    # get_parameters / set_parameters
    fresh = small_model(seed=11)
    fresh.set_parameters(model.get_parameters())
    th.testing.assert_close(fresh.get_global_parameters(), model.get_global_parameters())


def test_adam_state_survives_save(tmp_path):
    model = small_model(local_optimizer="adam", learning_rate=1e-3)
    model.learn(200)
    model.save(tmp_path / "adam.zip")
    loaded = FederatedPG.load(tmp_path / "adam.zip")
    th.testing.assert_close(loaded.local_optimizer_state.exp_avg, model.local_optimizer_state.exp_avg)
    assert int(loaded.local_optimizer_state.step_count) > 0


def test_continue_learning():
    model = small_model()
    model.learn(200)
    steps, rounds = model.num_timesteps, model._n_rounds
    model.learn(200, reset_num_timesteps=False)
    assert model.num_timesteps >= steps + 200
    assert model._n_rounds > rounds


def test_sb3_callbacks_and_progress_bar(tmp_path):
    model = small_model()
    eval_env = gym.make("sb3_fedpg/HeteroCartPole-v0", agent=0, n_agents=3)
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1.0, verbose=0)  # any return stops at the first eval
    eval_cb = EvalCallback(eval_env, eval_freq=20, n_eval_episodes=1, callback_on_new_best=stop, verbose=0)
    ckpt = CheckpointCallback(save_freq=10, save_path=str(tmp_path / "ckpt"), name_prefix="fedpg")
    model.learn(10_000, callback=[eval_cb, ckpt], progress_bar=True)
    assert model.num_timesteps < 10_000  # stopped by the threshold callback
    assert eval_cb.n_calls >= 20
    saved = sorted((tmp_path / "ckpt").glob("fedpg_*_steps.zip"))
    assert saved
    FederatedPG.load(saved[-1])
    mean_reward, _ = evaluate_policy(model, eval_env, n_eval_episodes=2)
    assert mean_reward > 0


def test_logger_keys(tmp_path):
    model = small_model()
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(400)
    import csv

    with open(tmp_path / "progress.csv") as f:
        header = next(csv.reader(f))
    for key in [
        "rollout/ep_rew_mean",
        "time/fps",
        "time/total_timesteps",
        "train/learning_rate",
        "train/policy_gradient_norm",
        "fed/round",
        "fed/drift",
        "fed/correction_norm",
        "fed/bytes_up",
        "fed/bytes_down",
        "fed/agent_0/ep_rew_mean",
    ]:
        assert key in header, key


def test_local_critics_stay_local():
    model = small_model(local_steps=2)
    model.learn(300)
    critics = model.critics.params.detach()
    # Agents with different rewards fit different critics; the actor is shared.
    assert not th.allclose(critics[0], critics[2])


def test_federated_env_object():
    env = make_federated_vec_env("sb3_fedpg/HeteroCartPole-v0", n_agents=4, n_envs_per_agent=2, seed=0)
    model = FederatedPG("MlpPolicy", env, n_steps=4, local_steps=2)
    assert model.n_agents == 4 and model.n_envs_per_agent == 2
    with pytest.raises(ValueError, match="n_agents=3 but the federated env has 4 agents"):
        FederatedPG("MlpPolicy", env, n_agents=3)


def test_default_constructor_solves_cartpole():
    # The promise in the README: SB3-like defaults that learn (CartPole solved: mean return >= 195).
    model = FederatedPG("MlpPolicy", "CartPole-v1", seed=0).learn(100_000)
    mean_reward, _ = evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=20)
    assert mean_reward >= 195


def test_normalised_gpomdp_weights_ignore_steps_after_a_trajectory_ends():
    model = small_model(env_id="CartPole-v1", n_agents=2, estimator="gpomdp", n_steps=200, local_steps=1)
    from stable_baselines3.common.callbacks import CallbackList

    model._setup_learn(1, None)
    callback = CallbackList([])
    callback.init_callback(model)
    theta = model.get_global_parameters().unsqueeze(0).repeat(2, 1)
    batch = model.sample_batch(theta, callback)
    assert batch.dones.sum() > 0  # CartPole episodes end within 200 random-ish steps
    # Steps after a trajectory's end must not move the gradient: changing their actions changes nothing.
    from sb3_fedpg.common.estimators import alive_mask

    dead = (alive_mask(batch.dones) == 0).reshape(2, -1)
    grads = model.learner.gradients(theta, batch)
    batch.actions = th.where(dead, 1 - batch.actions, batch.actions)
    th.testing.assert_close(model.learner.gradients(theta, batch), grads)

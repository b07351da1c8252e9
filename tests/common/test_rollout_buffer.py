"""
``model.rollout_buffer``: SB3's ``RolloutBuffer`` of the last rollout, as SB3's callbacks read it in
``_on_rollout_end`` — the very batch the agents train on, in SB3's layout (``n_steps`` rows, the ``N·M``
sub-environments agent-major), with each agent's own critic's values and the algorithm's advantages.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import A2C
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM, make_federated_vec_env
from sb3_fedpg.common.safe_format import UnsafeToSaveError

N_AGENTS, M, K = 2, 2, 8


class DictWalk(gym.Env):
    """A point on a line with a Dict observation (position, step counter) and Box actions; episodes of 5 steps."""

    observation_space = spaces.Dict(
        {"position": spaces.Box(-10, 10, (1,), np.float32), "step": spaces.Box(0, 100, (1,), np.float32)}
    )
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-1, 1)), 0
        return self._obs(), {}

    def _obs(self):
        return {"position": np.array([self.x], np.float32), "step": np.array([self.t], np.float32)}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        return self._obs(), -abs(self.x), self.t >= 5, False, {}


def shaped_rewards(n_agents):
    # agents differ in their reward: a column in the wrong agent's place would not go unnoticed
    return [lambda obs, action, next_obs, reward, i=i: reward * (i + 1) for i in range(n_agents)]


ENVS = {
    "discrete": ("CartPole-v1", "MlpPolicy"),
    "box": ("Pendulum-v1", "MlpPolicy"),
    "dict": (DictWalk, "MultiInputPolicy"),
}
ALGOS = {
    "pg_gae": (FederatedPG, dict(estimator="gae", local_steps=2)),
    "pg_gpomdp": (FederatedPG, dict(estimator="gpomdp", local_steps=2)),
    "ppo": (FederatedPPO, dict(batch_size=8, n_epochs=2)),
    "svrpgm_gpomdp": (FederatedSVRPGM, dict(local_steps=2)),
    "svrpgm_gae": (FederatedSVRPGM, dict(local_steps=2, estimator="gae")),
}


def build(algo_name, env_name, seed=0, **kwargs):
    algo, algo_kwargs = ALGOS[algo_name]
    env_id, policy = ENVS[env_name]
    env = make_federated_vec_env(env_id, reward_fns=shaped_rewards(N_AGENTS), n_envs_per_agent=M, seed=seed)
    settings = dict(n_steps=K, seed=seed, policy_kwargs=dict(net_arch=[16]), normalize_advantage=False)
    return algo(policy, env, **{**settings, **algo_kwargs, **kwargs})


def flat(model, obs):
    """The buffer's observations ``(K, N·M, ...)`` as the batched policy sees them: ``(K, N·M, obs_dim)``."""
    if isinstance(obs, dict):
        rows = {key: value.reshape(-1, *value.shape[2:]) for key, value in obs.items()}
    else:
        rows = obs.reshape(-1, *obs.shape[2:])
    return model._flat_obs(rows).view(K, N_AGENTS * M, -1)


def per_step(x):
    """A batch tensor ``(N, K, M)`` in SB3's layout ``(K, N·M)``, written out index by index (agent-major columns)."""
    x = x.detach().cpu()
    return np.array([[float(x[i, k, m]) for i in range(N_AGENTS) for m in range(M)] for k in range(K)])


def per_sample(x):
    """A batch tensor ``(N, K·M, ...)`` (step-major within an agent) in SB3's layout ``(K, N·M, ...)``."""
    x = x.detach().cpu()
    return th.stack([th.stack([x[i, k * M + m] for i in range(N_AGENTS) for m in range(M)]) for k in range(K)]).numpy()


class Snapshots(BaseCallback):
    """Copies of the buffer at every ``on_rollout_end``, with what the env said at every step of that rollout."""

    def __init__(self):
        super().__init__()
        self.buffers, self.steps, self.last_values, self.last_dones, self.sb3_log_probs = [], [], [], [], []
        self._rollout = []

    def _on_rollout_start(self):
        self._rollout = []

    def _on_step(self):
        self._rollout.append({key: self.locals[key] for key in ("new_obs", "rewards", "dones", "env_actions")})
        return True

    def _on_rollout_end(self):
        buffer = self.model.rollout_buffer
        fields = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns")
        copied = {}
        for f in fields:
            value = getattr(buffer, f)
            copied[f] = {k: v.copy() for k, v in value.items()} if isinstance(value, dict) else value.copy()
        copied["pos"], copied["full"] = buffer.pos, buffer.full
        self.buffers.append(copied)
        self.steps.append(self._rollout)
        # every agent's own critic (predict_agent_values: all critics on all observations) at the last observation
        last = self.model._last_obs
        values = self.model.predict_agent_values(last)  # (N, N·M)
        self.last_values.append(np.array([values[j // M, j] for j in range(N_AGENTS * M)]))
        self.last_dones.append(np.array(self.model._last_episode_starts, dtype=np.float32))


def record_training_batches(model, monkeypatch):
    """The batches and weights every gradient is computed from (FedPG, FedSVRPG-M) or PPO's solvers (their data)."""
    seen = {"batches": [], "weights": [], "params": [], "solvers": []}
    original_collect = model.collect_batch

    def collect(params, *args, **kwargs):
        seen["params"].append(params.detach().clone())
        return original_collect(params, *args, **kwargs)

    monkeypatch.setattr(model, "collect_batch", collect)
    if isinstance(model, FederatedPPO):
        original_solver = model.local_solver

        def local_solver(*args, **kwargs):
            solver = original_solver(*args, **kwargs)
            seen["solvers"].append(solver)
            return solver

        monkeypatch.setattr(model, "local_solver", local_solver)
    else:
        learner = model.learner
        original_weights = learner.batch_weights

        def batch_weights(batch, *args, **kwargs):
            weights = original_weights(batch, *args, **kwargs)
            seen["batches"].append(batch)
            seen["weights"].append(weights.weights.detach().clone())
            return weights

        monkeypatch.setattr(learner, "batch_weights", batch_weights)
    return seen


def sb3_gae(snapshot, last_values, last_dones, gamma, gae_lambda):
    """SB3's own GAE (``RolloutBuffer.compute_returns_and_advantage``) on the buffer's rewards, values and starts."""
    buffer = RolloutBuffer(
        K, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), gamma=gamma, gae_lambda=gae_lambda, n_envs=N_AGENTS * M
    )
    buffer.rewards[:] = snapshot["rewards"]
    buffer.values[:] = snapshot["values"]
    buffer.episode_starts[:] = snapshot["episode_starts"]
    buffer.compute_returns_and_advantage(th.as_tensor(last_values), last_dones)
    return buffer.advantages, buffer.returns


@pytest.mark.parametrize("env_name", list(ENVS))
@pytest.mark.parametrize("algo_name", list(ALGOS))
def test_the_buffer_is_the_batch_the_agents_train_on(algo_name, env_name, monkeypatch):
    model = build(algo_name, env_name)
    seen = record_training_batches(model, monkeypatch)
    callback = Snapshots()
    model.learn(2 * model.steps_per_round, callback=callback)
    n_batches = model.steps_per_round // (K * N_AGENTS * M)
    assert len(callback.buffers) == 2 * n_batches  # one buffer per batch, each between its own rollout start/end
    uses_critic = model.rollout_estimator().uses_critic
    for b, snapshot in enumerate(callback.buffers):
        assert snapshot["pos"] == K and snapshot["full"]
        steps = callback.steps[b]
        assert len(steps) == K
        # what the env gave and took, step by step (VecEnv order: agent-major)
        np.testing.assert_allclose(snapshot["rewards"], np.stack([s["rewards"] for s in steps]), rtol=1e-6)
        starts = np.stack([s["dones"] for s in steps])[:-1]
        np.testing.assert_array_equal(snapshot["episode_starts"][1:], starts)
        obs = snapshot["observations"]
        for k in range(1, K):
            previous = steps[k - 1]["new_obs"]
            if isinstance(obs, dict):
                for key in obs:
                    np.testing.assert_array_equal(obs[key][k], previous[key])
            else:
                np.testing.assert_array_equal(obs[k], previous)
        if isinstance(model.action_space, spaces.Discrete):
            np.testing.assert_array_equal(snapshot["actions"][:, :, 0], np.stack([s["env_actions"] for s in steps]))
        # the batch the agents train on
        if isinstance(model, FederatedPPO):
            data = seen["solvers"][b]._data
            obs_rows, actions = data["obs"], data["actions"]
            advantages, returns = data["advantages"].view(N_AGENTS, K, M), data["returns"].view(N_AGENTS, K, M)
            values = data["old_values"].view(N_AGENTS, K, M)
            np.testing.assert_allclose(snapshot["values"], per_step(values), atol=1e-6)
            np.testing.assert_allclose(snapshot["returns"], per_step(returns), atol=1e-5)
            np.testing.assert_allclose(snapshot["log_probs"], per_sample(data["old_log_prob"]), atol=1e-5)
        else:
            batch = seen["batches"][b]
            obs_rows, actions, advantages = batch.obs, batch.actions, seen["weights"][b]
            np.testing.assert_allclose(snapshot["rewards"], per_step(batch.rewards), rtol=1e-6)
        np.testing.assert_allclose(per_sample(obs_rows), flat(model, obs).numpy(), atol=1e-6)
        np.testing.assert_allclose(snapshot["actions"], per_sample(actions).reshape(K, N_AGENTS * M, -1), atol=1e-6)
        np.testing.assert_allclose(snapshot["advantages"], per_step(advantages), atol=1e-5)
        np.testing.assert_allclose(snapshot["returns"], snapshot["advantages"] + snapshot["values"], atol=1e-5)
        # behaviour log-probabilities: under the parameters that collected the batch (a local step's own)
        with th.no_grad(), model._actor.evaluation():
            expected = model._actor.distribution(seen["params"][b], obs_rows).log_prob(actions)
        np.testing.assert_allclose(snapshot["log_probs"], per_sample(expected), atol=1e-5)
        if uses_critic:
            # SB3's own GAE on the buffer's rewards, values and starts gives the buffer's advantages
            gamma, gae_lambda = model.gamma, model.gae_lambda
            sb3_adv, sb3_ret = sb3_gae(snapshot, callback.last_values[b], callback.last_dones[b], gamma, gae_lambda)
            np.testing.assert_allclose(snapshot["advantages"], sb3_adv, atol=1e-4)
            np.testing.assert_allclose(snapshot["returns"], sb3_ret, atol=1e-4)
        else:
            np.testing.assert_array_equal(snapshot["values"], 0.0)


def test_the_values_are_each_agents_own_critic():
    model = build("pg_gae", "discrete")

    class Check(BaseCallback):
        checked = distinct = 0

        def _on_step(self):
            return True

        def _on_rollout_end(self):
            buffer = self.model.rollout_buffer
            values = self.model.predict_agent_values(buffer.observations.reshape(-1, 4))  # (N, K·N·M)
            values = values.reshape(N_AGENTS, K, N_AGENTS * M)
            own = np.stack([values[j // M, :, j] for j in range(N_AGENTS * M)], axis=1)
            np.testing.assert_allclose(buffer.values, own, atol=1e-6)
            Check.checked += 1
            Check.distinct += not np.allclose(values[0], values[1])

    model.learn(3 * model.steps_per_round, callback=Check())
    assert Check.checked == 6
    assert Check.distinct >= 4  # once trained, the critics differ: the check can tell them apart


@pytest.mark.parametrize("env_name", list(ENVS))
def test_shapes_and_dtypes_are_sb3s(env_name):
    env_id, policy = ENVS[env_name]
    model = build("pg_gae", env_name)
    sb3 = A2C(policy, make_vec_env(env_id, n_envs=N_AGENTS * M, seed=0), n_steps=K, seed=0)
    model.learn(model.steps_per_round)
    ours, theirs = model.rollout_buffer, sb3.rollout_buffer
    assert type(ours) is type(theirs)
    assert (ours.buffer_size, ours.n_envs) == (theirs.buffer_size, theirs.n_envs) == (K, N_AGENTS * M)
    for name in ("actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns"):
        assert getattr(ours, name).shape == getattr(theirs, name).shape, name
        assert getattr(ours, name).dtype == getattr(theirs, name).dtype, name
    if isinstance(theirs.observations, dict):
        for key in theirs.observations:
            assert ours.observations[key].shape == theirs.observations[key].shape
            assert ours.observations[key].dtype == theirs.observations[key].dtype
    else:
        assert ours.observations.shape == theirs.observations.shape
        assert ours.observations.dtype == theirs.observations.dtype
    # SB3's get() runs on it: the minibatches SB3-style code would draw
    sample = next(ours.get(batch_size=8))
    assert sample.advantages.shape == (8,)


class SubRolloutBuffer(RolloutBuffer):
    """No override: filled through ``add()``, step by step."""


class SubDictRolloutBuffer(DictRolloutBuffer):
    """No override: filled through ``add()``, step by step."""


@pytest.mark.parametrize("env_name", list(ENVS))
def test_sb3s_own_classes_are_written_as_their_add_writes_them(env_name):
    model = build("pg_gae", env_name)
    model.learn(model.steps_per_round)
    batch = model._pending_rollout
    direct = model._make_rollout_buffer(K, N_AGENTS * M)
    sub = (SubDictRolloutBuffer if isinstance(direct, DictRolloutBuffer) else SubRolloutBuffer)(
        K, model.observation_space, model.action_space, n_envs=N_AGENTS * M
    )
    model._fill_rollout_buffer(direct, batch)
    model._fill_rollout_buffer(sub, batch)
    assert (direct.pos, direct.full) == (sub.pos, sub.full) == (K, True)
    for name in ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns"):
        ours, theirs = getattr(direct, name), getattr(sub, name)
        for key in ours if isinstance(ours, dict) else [None]:
            a, b = (ours[key], theirs[key]) if key is not None else (ours, theirs)
            assert a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_before_any_rollout_it_is_empty_as_sb3s():
    model = build("ppo", "discrete")
    buffer = model.rollout_buffer
    assert isinstance(buffer, RolloutBuffer) and buffer.pos == 0 and not buffer.full
    assert buffer.observations.shape == (K, N_AGENTS * M, 4)


@pytest.mark.parametrize("algo_name", ["pg_gae", "ppo", "svrpgm_gae"])
def test_reading_the_buffer_changes_no_training(algo_name):
    class Read(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_end(self):
            assert self.model.rollout_buffer.full

    params = []
    for callback in (None, Read()):
        model = build(algo_name, "discrete", seed=3)
        model.learn(2 * model.steps_per_round, callback=callback)
        params.append((model.get_global_parameters(), model.critics.params.detach().clone()))
    th.testing.assert_close(params[0][0], params[1][0], rtol=0, atol=0)
    th.testing.assert_close(params[0][1], params[1][1], rtol=0, atol=0)


class BatchNormDropoutExtractor(BaseFeaturesExtractor):
    """Batch norm and dropout: train- and eval-mode passes differ (the critics' values depend on the mode)."""

    def __init__(self, observation_space):
        super().__init__(observation_space, 8)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3))

    def forward(self, observations):
        return self.net(observations)


@pytest.mark.parametrize("algo_name", ["pg_gae", "ppo"])
def test_reading_the_buffer_changes_no_training_with_batch_norm_and_dropout(algo_name):
    class Read(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_end(self):
            assert self.model.rollout_buffer.full

    policy_kwargs = dict(net_arch=[16], features_extractor_class=BatchNormDropoutExtractor)
    params = []
    for callback in (None, Read()):
        model = build(algo_name, "discrete", seed=3, policy_kwargs=policy_kwargs)
        assert model.critics.mode_dependent
        model.learn(2 * model.steps_per_round, callback=callback)
        params.append((model.get_global_parameters(), model.critics.params.detach().clone()))
    th.testing.assert_close(params[0][0], params[1][0], rtol=0, atol=0)
    th.testing.assert_close(params[0][1], params[1][1], rtol=0, atol=0)


def test_truncated_episodes_are_bootstrapped_with_the_agents_critic_as_sb3_does():
    env = make_federated_vec_env(
        lambda: gym.make("CartPole-v1", max_episode_steps=3), reward_fns=shaped_rewards(N_AGENTS), n_envs_per_agent=M, seed=0
    )
    model = FederatedPPO("MlpPolicy", env, n_steps=K, batch_size=8, seed=0, policy_kwargs=dict(net_arch=[16]))

    class Check(BaseCallback):
        checked = 0

        def _on_rollout_start(self):
            self.rewards = []

        def _on_step(self):
            rewards = np.array(self.locals["rewards"], dtype=np.float32)
            for j, info in enumerate(self.locals["infos"]):
                if info.get("TimeLimit.truncated"):
                    # SB3: reward + γ V(terminal observation), here with the critic of the env's own agent
                    value = self.model.predict_agent_values(info["terminal_observation"])[j // M, 0]
                    rewards[j] += self.model.gamma * value
                    Check.checked += 1
            self.rewards.append(rewards)
            return True

        def _on_rollout_end(self):
            np.testing.assert_allclose(self.model.rollout_buffer.rewards, np.stack(self.rewards), rtol=1e-5, atol=1e-6)

    model.learn(2 * model.steps_per_round, callback=Check())
    assert Check.checked > 4


def test_collect_rollouts_fills_the_buffer_without_training():
    model = build("pg_gae", "discrete")
    before = (model.get_global_parameters(), model.critics.params.detach().clone())
    _, callback = model._setup_learn(total_timesteps=2 * K * N_AGENTS * M)
    callback = Snapshots()
    callback.init_callback(model)
    for _ in range(2):
        assert model.collect_rollouts(model.get_env(), callback, model.rollout_buffer, n_rollout_steps=K)
    th.testing.assert_close(model.get_global_parameters(), before[0])
    th.testing.assert_close(model.critics.params.detach(), before[1])
    assert model.num_timesteps == 2 * K * N_AGENTS * M
    buffer = model.rollout_buffer
    assert buffer.full and len(callback.buffers) == 2
    # filled before on_rollout_end, under the global policy: SB3's own policy gives its log-probabilities
    np.testing.assert_array_equal(callback.buffers[1]["actions"], buffer.actions)
    obs = th.as_tensor(buffer.observations.reshape(-1, 4))
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(obs, th.as_tensor(buffer.actions.reshape(-1)))
    np.testing.assert_allclose(buffer.log_probs.reshape(-1), log_prob.numpy(), atol=1e-5)
    # a buffer of one's own, of another length (the model's is left as it was, as SB3's)
    other = RolloutBuffer(3, model.observation_space, model.action_space, n_envs=N_AGENTS * M, gamma=model.gamma)
    assert model.collect_rollouts(model.get_env(), callback, other, n_rollout_steps=3) and other.full
    assert model.rollout_buffer is buffer and buffer.buffer_size == K
    np.testing.assert_array_equal(callback.buffers[1]["actions"], buffer.actions)

    class Stop(BaseCallback):
        def _on_step(self):
            return False

    stop = Stop()
    stop.init_callback(model)
    assert model.collect_rollouts(model.get_env(), stop, model.rollout_buffer, n_rollout_steps=K) is False
    with pytest.raises(ValueError, match="holds 3 steps of 4 envs; this rollout is 8 steps"):
        model.collect_rollouts(model.get_env(), callback, other, n_rollout_steps=K)
    with pytest.raises(ValueError, match="runs on the model's own env"):
        model.collect_rollouts(make_vec_env("CartPole-v1", n_envs=4), callback, model.rollout_buffer, K)


class CountingBuffer(RolloutBuffer):
    def __init__(self, *args, label="x", **kwargs):
        self.label, self.adds = label, 0
        super().__init__(*args, **kwargs)

    def add(self, *args, **kwargs):
        self.adds += 1
        super().add(*args, **kwargs)


def test_a_rollout_buffer_class_of_ones_own_is_filled_through_its_add(tmp_path):
    model = build("ppo", "discrete", rollout_buffer_class=CountingBuffer, rollout_buffer_kwargs=dict(label="mine"))
    model.learn(model.steps_per_round)
    buffer = model.rollout_buffer
    assert isinstance(buffer, CountingBuffer) and buffer.label == "mine" and buffer.adds == K and buffer.full
    model.save(tmp_path / "m.zip")
    loaded = FederatedPPO.load(tmp_path / "m.zip")
    assert loaded.rollout_buffer_class is CountingBuffer and isinstance(loaded.rollout_buffer, CountingBuffer)
    with pytest.raises(UnsafeToSaveError, match="rollout_buffer_class"):
        model.save(tmp_path / "w.zip", format="safetensors")
    plain = build("ppo", "discrete", rollout_buffer_class=RolloutBuffer)
    plain.save(tmp_path / "w.zip", format="safetensors")  # SB3's own class: nothing to describe


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO, FederatedSVRPGM])
def test_rollout_buffer_arguments_are_checked_as_sb3_does(algo):
    # SB3's test_buffers.py::test_custom_rollout_buffer
    algo("MlpPolicy", "Pendulum-v1", rollout_buffer_class=RolloutBuffer, rollout_buffer_kwargs=dict())
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'wrong_keyword'"):
        FederatedPG(
            "MlpPolicy", "Pendulum-v1", rollout_buffer_class=RolloutBuffer, rollout_buffer_kwargs=dict(wrong_keyword=1)
        )
    with pytest.raises(TypeError, match=r"got multiple values for keyword argument 'gamma'"):
        algo("MlpPolicy", "Pendulum-v1", rollout_buffer_class=RolloutBuffer, rollout_buffer_kwargs=dict(gamma=1))
    with pytest.raises(AssertionError, match=r"DictRolloutBuffer must be used with Dict obs space only"):
        algo("MlpPolicy", "Pendulum-v1", rollout_buffer_class=DictRolloutBuffer)
    with pytest.raises(TypeError, match="must be RolloutBuffer or a subclass of it"):
        algo("MlpPolicy", "Pendulum-v1", rollout_buffer_class=dict)

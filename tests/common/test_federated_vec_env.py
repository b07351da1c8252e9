import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from sb3_fedpg.envs.native import SameStepCartPoleVectorEnv

from sb3_fedpg import FederatedVecEnv, make_federated_vec_env


def const_reward(value):
    return lambda obs, action, next_obs, reward: np.full(len(obs), value, dtype=np.float32)


def test_layout_and_per_agent_rewards():
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=3, reward_fns=[const_reward(i) for i in range(4)], seed=0)
    assert env.num_envs == 12 and env.n_agents == 4
    np.testing.assert_array_equal(env.agent_ids, np.repeat(np.arange(4), 3))
    env.reset()
    _, rewards, _, _ = env.step(np.zeros(12, dtype=np.int64))
    np.testing.assert_array_equal(rewards, np.repeat(np.arange(4), 3).astype(np.float32))


def test_same_step_autoreset_and_episode_info():
    env = make_federated_vec_env("CartPole-v1", n_agents=2, n_envs_per_agent=2, seed=0)
    obs = env.reset()
    seen_done = False
    for _ in range(200):
        obs, _, dones, infos = env.step(np.ones(4, dtype=np.int64))  # always push right: falls fast
        for i in np.flatnonzero(dones):
            seen_done = True
            terminal = infos[i]["terminal_observation"]
            assert abs(terminal[0]) > 2.4 or abs(terminal[2]) > 0.2094  # the terminal state is out of bounds
            assert np.all(np.abs(obs[i]) <= 0.05)  # the returned obs already starts a new episode
            assert infos[i]["episode"]["agent"] == i // 2
            assert infos[i]["episode"]["l"] >= 1
    assert seen_done


def test_native_cartpole_matches_gymnasium_physics():
    venv = SameStepCartPoleVectorEnv(num_envs=1)
    venv.reset(seed=0)
    single = gym.make("CartPole-v1").unwrapped
    single.reset(seed=0)
    single.state = venv.state[:, 0].copy()
    for action in [0, 1, 1, 0, 1]:
        obs_v, r_v, term_v, _, _ = venv.step(np.array([action]))
        obs_s, r_s, term_s, _, _ = single.step(action)
        np.testing.assert_allclose(obs_v[0], obs_s, rtol=1e-5, atol=1e-6)
        assert r_v[0] == r_s and term_v[0] == term_s


def test_sync_and_native_give_the_same_interface():
    for mode in ("native", "sync"):
        env = make_federated_vec_env("CartPole-v1", n_agents=2, n_envs_per_agent=2, vectorization_mode=mode, seed=1)
        obs = env.reset()
        assert obs.shape == (4, 4)
        obs, rewards, dones, infos = env.step(np.zeros(4, dtype=np.int64))
        assert rewards.shape == (4,) and dones.shape == (4,) and len(infos) == 4


def test_reward_wrong_shape_names_agent():
    bad = lambda obs, action, next_obs, reward: np.zeros(len(obs) + 1)
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2, reward_fns=[const_reward(0.0), bad])
    env.reset()
    with pytest.raises(ValueError, match=r"reward function of agent 1 returned shape \(3,\), expected \(2,\)"):
        env.step(np.zeros(4, dtype=np.int64))


def test_nan_reward_names_agent():
    nan = const_reward(np.nan)
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2, reward_fns=[const_reward(0.0), const_reward(1.0), nan])
    env.reset()
    with pytest.raises(ValueError, match=r"non-finite reward \(NaN or inf\) for agent\(s\) \[2\]"):
        env.step(np.zeros(6, dtype=np.int64))


def test_mismatched_agent_spaces_name_the_agent():
    factories = [lambda: gym.make("CartPole-v1"), lambda: gym.make("CartPole-v1"), lambda: gym.make("Acrobot-v1")]
    with pytest.raises(ValueError, match="agent 2 has observation_space"):
        make_federated_vec_env(factories, n_envs_per_agent=1)


def test_per_agent_factories():
    factories = [lambda i=i: gym.make("sb3_fedpg/HeteroCartPole-v0", agent=i, n_agents=3) for i in range(3)]
    env = make_federated_vec_env(factories, n_envs_per_agent=2, seed=0)
    assert env.n_agents == 3 and env.num_envs == 6
    env.reset()
    _, rewards, _, _ = env.step(np.zeros(6, dtype=np.int64))
    assert rewards.shape == (6,)


def test_agents_must_divide_envs():
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 5, autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="5 sub-environments cannot be split evenly between 2 agents"):
        FederatedVecEnv(venv, n_agents=2)


def test_next_step_autoreset_is_refused():
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
    with pytest.raises(ValueError, match="SAME_STEP"):
        FederatedVecEnv(venv, n_agents=1)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(n_envs_per_agent=0), ValueError, "n_envs_per_agent must be >= 1"),
        (dict(n_agents=0), ValueError, "n_agents must be >= 1"),
        (dict(reward_fns=[const_reward(0)] * 2, n_agents=3), ValueError, "n_agents=3 but 2 reward functions"),
        (dict(reward_fns=[]), ValueError, "reward_fns is empty"),
        (dict(reward_fns=[const_reward(0), "nope"]), TypeError, "reward function of agent 1 is not callable"),
        (dict(vectorization_mode="threads"), ValueError, "unknown vectorization_mode"),
    ],
)
def test_builder_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        make_federated_vec_env("CartPole-v1", **kwargs)


def test_native_mode_without_native_env():
    with pytest.raises(ValueError, match="no native vector implementation"):
        make_federated_vec_env("Pendulum-v1", vectorization_mode="native")


@pytest.mark.parametrize(
    "env, kwargs, error, message",
    [
        ("sb3_fedpg/HeteroCartPole-v0", dict(n_agents=0), ValueError, "n_agents must be >= 1"),  # built 4 agents
        ("sb3_fedpg/HeteroCartPole-v0", dict(n_agents=2.5), ValueError, "n_agents must be >= 1"),
        ("CartPole-v1", dict(n_envs_per_agent="2"), ValueError, "n_envs_per_agent must be >= 1"),
        ("CartPole-v1", dict(n_envs_per_agent=True), ValueError, "n_envs_per_agent must be >= 1"),
        ("CartPole-v1", dict(seed=-1), ValueError, "seed must be None or an integer"),
        ("CartPole-v1", dict(env_kwargs=[("a", 1)]), TypeError, "env_kwargs must be a dict"),
        (
            "sb3_fedpg/HeteroCartPole-v0",
            dict(env_kwargs={"heterogeneity": "high"}),
            TypeError,
            r"env_kwargs\['heterogeneity'\]",
        ),
        ("NoSuchEnv-v0", {}, ValueError, "env 'NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist"),
        (42, {}, TypeError, "env must be an env id, an env factory or a list"),
        ([lambda: gym.make("CartPole-v1"), "CartPole-v1"], {}, TypeError, "env factory of agent 1 is not callable"),
        ("CartPole-v1", dict(vectorization_mode=["sync"]), ValueError, "unknown vectorization_mode"),
    ],
)
def test_builder_argument_checks_name_the_field(env, kwargs, error, message):
    with pytest.raises(error, match=message):
        make_federated_vec_env(env, **kwargs)


class OldGymStep(gym.Env):
    """The old Gym API: step returns (obs, reward, done, info)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, False, {}


class OldGymReset(OldGymStep):
    """The old Gym API: reset returns the observation alone."""

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32)


@pytest.mark.parametrize("env_cls, method", [(OldGymStep, r"step\(\) returned a 4-tuple"), (OldGymReset, r"reset\(\)")])
@pytest.mark.parametrize("per_agent", [False, True])
def test_an_old_gym_env_is_named_with_the_fix(env_cls, method, per_agent):
    from sb3_fedpg import FederatedPG

    with pytest.raises(
        TypeError, match=rf"OldGym\w+\.{method}.*old Gym.*GymV21CompatibilityV0|OldGym\w+\.{method}.*Gymnasium"
    ):
        env = make_federated_vec_env(
            [env_cls, env_cls] if per_agent else env_cls, n_agents=None if per_agent else 2, n_envs_per_agent=2
        )
        FederatedPG("MlpPolicy", env, n_steps=8).learn(64)


class Pixels(gym.Env):
    """Declares Box(0, 1) but returns 0..255 values (a forgotten division)."""

    observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, scale=255.0):
        self.scale = scale

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.full(3, 0.5 * self.scale, np.float32), {}

    def step(self, action):
        return np.full(3, 0.5 * self.scale, np.float32), 1.0, False, False, {}


@pytest.mark.parametrize("algo", ["fedpg", "fedppo"])
def test_observations_far_outside_the_box_warn_once(algo):
    import warnings

    from sb3_fedpg import FederatedPG, FederatedPPO
    from sb3_fedpg.common.federated_vec_env import ObservationBoundsWarning

    cls = FederatedPG if algo == "fedpg" else FederatedPPO
    extra = {"batch_size": 8} if algo == "fedppo" else {}
    model = cls("MlpPolicy", make_federated_vec_env(Pixels, n_agents=2, n_envs_per_agent=2), n_steps=8, **extra)
    with pytest.warns(ObservationBoundsWarning, match=r"127.5 while the declared space allows \[0, 1\]") as record:
        model.learn(4 * model.steps_per_round)
    assert len([w for w in record if w.category is ObservationBoundsWarning]) == 1
    inside = cls("MlpPolicy", make_federated_vec_env(lambda: Pixels(1.0), n_agents=2, n_envs_per_agent=2), n_steps=8, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObservationBoundsWarning)
        inside.learn(2 * inside.steps_per_round)


def test_a_plain_vec_env_of_a_family_split_between_agents_warns():
    import warnings

    from stable_baselines3.common.env_util import make_vec_env

    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.federated_algorithm import HomogeneousFamilyWarning

    with pytest.warns(HomogeneousFamilyWarning, match=r"share one reward.*n_agents=4"):
        FederatedPG("MlpPolicy", make_vec_env("sb3_fedpg/HeteroCartPole-v0", n_envs=8), n_agents=4, n_steps=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HomogeneousFamilyWarning)
        FederatedPG("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8), n_agents=4, n_steps=8)  # identical agents: meant
        FederatedPG("MlpPolicy", make_vec_env("sb3_fedpg/HeteroCartPole-v0", n_envs=8), n_agents=1, n_steps=8)

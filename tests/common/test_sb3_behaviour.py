"""
What SB3's own tests expect of an algorithm (save/load of the model and of the policy alone, ``set_env`` with
another number of envs, deterministic training, callbacks, progress bar, ``evaluate_policy``), parametrized over
the four action spaces, both algorithms and FederatedPG's estimators. Written for this library, after SB3's
tests/test_save_load.py, test_deterministic.py, test_callbacks.py and test_predict.py; the last part holds the
behaviour differences that running SB3's own tests with these algorithms found (``tools/sb3_parity.py``, issue 27),
over all three algorithms.
"""

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    EveryNTimesteps,
    LogEveryNTimesteps,
    ProgressBarCallback,
    StopTrainingOnMaxEpisodes,
    StopTrainingOnNoModelImprovement,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from sb3_fedpg import FederatedA2C, FederatedPG, FederatedPPO, FederatedSVRPGM, make_federated_vec_env
from sb3_fedpg.common.federated_algorithm import FederatedDifferenceWarning
from sb3_fedpg.common.policies import FederatedActorCriticPolicy

MAKERS = {
    "Discrete": lambda: IdentityEnv(4),
    "Box": lambda: IdentityEnvBox(eps=0.5),
    "MultiDiscrete": lambda: IdentityEnvMultiDiscrete(3),
    "MultiBinary": lambda: IdentityEnvMultiBinary(3),
}
# (algorithm, its extra arguments): both algorithms, each of FederatedPG's estimators
ALGOS = [
    pytest.param(FederatedPG, {"estimator": "gae"}, id="FedPG-gae"),
    pytest.param(FederatedPG, {"estimator": "gpomdp", "baseline": "mean"}, id="FedPG-gpomdp"),
    pytest.param(FederatedPG, {"estimator": "reinforce"}, id="FedPG-reinforce"),
    pytest.param(FederatedPPO, {"n_epochs": 2, "batch_size": 16}, id="FedPPO"),
    pytest.param(FederatedSVRPGM, {"local_steps": 2}, id="FedSVRPGM"),
    pytest.param(FederatedA2C, {"local_steps": 2}, id="FedA2C"),
]


def seeded_factory(space):
    # SB3's identity envs draw their states from their action space, which env.reset(seed) does not seed.
    def make():
        env = MAKERS[space]()
        env.action_space.seed(0)
        return env

    return make


def make_env(space, n_agents=2, n_envs_per_agent=2):
    return make_federated_vec_env([seeded_factory(space)] * n_agents, n_envs_per_agent=n_envs_per_agent, seed=0)


def make_model(algo, kwargs, space, seed=0, **extra):
    return algo("MlpPolicy", make_env(space), n_steps=8, seed=seed, policy_kwargs={"net_arch": [16]}, **kwargs, **extra)


@pytest.mark.parametrize("algo, kwargs", ALGOS)
@pytest.mark.parametrize("space", list(MAKERS))
def test_save_load_round_trip(algo, kwargs, space, tmp_path):
    model = make_model(algo, kwargs, space).learn(200)
    obs = model.env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", env=make_env(space))
    th.testing.assert_close(loaded.get_global_parameters(), model.get_global_parameters(), rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    th.testing.assert_close(loaded.critics.params, model.critics.params, rtol=0, atol=0)  # local critics saved too
    loaded.learn(100)  # and it trains on
    # The policy alone (SB3's policy.save / load): same actions, no env needed.
    model.policy.save(tmp_path / "policy.pth")
    policy = FederatedActorCriticPolicy.load(tmp_path / "policy.pth")
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], actions)
    assert actions.shape == (4, *model.action_space.shape)


@pytest.mark.parametrize("algo, kwargs", ALGOS)
@pytest.mark.parametrize("space", list(MAKERS))
def test_same_seed_same_parameters(algo, kwargs, space):
    runs = [make_model(algo, kwargs, space, seed=5).learn(200) for _ in range(2)]
    th.testing.assert_close(runs[0].get_global_parameters(), runs[1].get_global_parameters(), rtol=0, atol=0)
    th.testing.assert_close(runs[0].critics.params, runs[1].critics.params, rtol=0, atol=0)
    other = make_model(algo, kwargs, space, seed=6).learn(200)
    assert not th.allclose(other.get_global_parameters(), runs[0].get_global_parameters())


@pytest.mark.parametrize("algo, kwargs", ALGOS[::3])
def test_set_env_with_another_number_of_envs(algo, kwargs, tmp_path, fresh_announcements):
    model = make_model(algo, kwargs, "Discrete").learn(100)
    with pytest.warns(FederatedDifferenceWarning, match="set_env with 6 envs where the model had 4: accepted"):
        model.set_env(make_env("Discrete", n_envs_per_agent=3))  # same agents, 3 envs each: works, announced
    assert model.n_envs == 6 and model.n_envs_per_agent == 3
    steps = model.num_timesteps
    model.learn(100, reset_num_timesteps=False)
    assert model.num_timesteps > steps
    with pytest.raises(ValueError, match="the federated env has 3 agents x 2 envs each, but the model has 2 agents"):
        model.set_env(make_env("Discrete", n_agents=3))
    model.save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="3 agents"):
        algo.load(tmp_path / "m.zip", env=make_env("Discrete", n_agents=3))


@pytest.mark.parametrize("algo, kwargs", ALGOS[::3])
def test_sb3_callbacks(algo, kwargs, tmp_path):
    model = make_model(algo, kwargs, "Discrete")
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    eval_env = make_env("Discrete", n_agents=1)  # the same VecEnv type as the training env: no type warning
    stop = StopTrainingOnRewardThreshold(reward_threshold=1e9)  # never reached
    no_improvement = StopTrainingOnNoModelImprovement(max_no_improvement_evals=1000)
    callbacks = CallbackList(
        [
            CheckpointCallback(save_freq=100, save_path=str(tmp_path / "ckpt"), name_prefix="m"),
            EvalCallback(
                eval_env, eval_freq=100, n_eval_episodes=2, callback_on_new_best=stop, callback_after_eval=no_improvement
            ),
            EveryNTimesteps(n_steps=100, callback=CheckpointCallback(1, str(tmp_path / "every"))),
            LogEveryNTimesteps(n_steps=128),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither the env-type nor the Monitor warning (nor whole rounds: 640 is 5 or 20)
        model.learn(640, callback=callbacks)
    assert sorted((tmp_path / "ckpt").glob("m_*_steps.zip"))
    assert sorted((tmp_path / "every").glob("*.zip"))
    rows = (tmp_path / "log" / "progress.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [int(float(row.split(",")[header.index("time/total_timesteps")])) for row in rows[1:]]
    # LogEveryNTimesteps dumps the logs between rounds too (model.dump_logs): more rows than rounds
    assert len(steps) > model._n_rounds and steps == sorted(steps)


@pytest.mark.parametrize("algo, kwargs", ALGOS[::3])
def test_stop_on_max_episodes(algo, kwargs):
    model = make_model(algo, kwargs, "Discrete")
    # 4 envs, 100-step episodes: 8 episodes end at step 200 of each env, i.e. within the round that holds 800 steps
    model.learn(100_000, callback=StopTrainingOnMaxEpisodes(max_episodes=2, verbose=0))
    assert model.num_timesteps < 2000


@pytest.mark.parametrize(
    "algo, kwargs",
    [
        (FederatedPG, {}),
        (FederatedPG, {"anchor_batches": 3, "local_steps": 2}),
        (FederatedPG, {"reuse_anchor_batch": False}),
        (FederatedPG, {"variance_control": "control_variate"}),
        (FederatedPPO, {}),
    ],
)
@pytest.mark.parametrize("total", [1, 150, 1500])
def test_progress_bar_total_is_the_steps_really_run(algo, kwargs, total):
    model = make_model(algo, kwargs, "Discrete")
    model.learn(1)
    assert model.num_timesteps == model.steps_per_round  # one round, measured
    bar = ProgressBarCallback()
    model.learn(total, callback=bar, reset_num_timesteps=False)
    assert bar.pbar.total == bar.pbar.n == model.num_timesteps - model.steps_per_round
    assert bar.pbar.total >= total and bar.pbar.total % model.steps_per_round == 0


@pytest.mark.parametrize("algo, kwargs", ALGOS[::3])
def test_evaluate_policy_on_the_models_own_env_counts_monitor_episodes(algo, kwargs):
    model = make_model(algo, kwargs, "Discrete")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rewards, lengths = evaluate_policy(model, model.env, n_eval_episodes=4, return_episode_rewards=True)
    assert lengths == [100] * 4 and all(0 <= r <= 100 for r in rewards)


def test_threads_hint_is_printed_once_when_verbose(capsys, monkeypatch):
    import sb3_fedpg.common.federated_algorithm as federated_algorithm

    monkeypatch.setattr(federated_algorithm, "_threads_hint_shown", False)
    threads = th.get_num_threads()
    th.set_num_threads(2)
    try:
        make_model(FederatedPG, {}, "Discrete", verbose=0, device="cpu").learn(1)
        assert "set_num_threads(1)" not in capsys.readouterr().out
        for _ in range(2):
            make_model(FederatedPG, {}, "Discrete", verbose=1, device="cpu").learn(1)
        assert capsys.readouterr().out.count("torch is using 2 CPU threads") == 1
        th.set_num_threads(1)
        monkeypatch.setattr(federated_algorithm, "_threads_hint_shown", False)
        make_model(FederatedPG, {}, "Discrete", verbose=1, device="cpu").learn(1)
        assert "set_num_threads(1)" not in capsys.readouterr().out
    finally:
        th.set_num_threads(threads)


# ---------------------------------------------------------------- SB3's own tests (tools/sb3_parity.py), issue 27
ALL_ALGOS = [FederatedPG, FederatedPPO, FederatedSVRPGM, FederatedA2C]


@pytest.fixture
def fresh_announcements(monkeypatch):
    """Each deliberate difference is announced once per process: forget the ones shown by earlier tests."""
    import sb3_fedpg.common.federated_algorithm as federated_algorithm

    monkeypatch.setattr(federated_algorithm, "_differences_announced", set())


class _StopAt(BaseCallback):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def _on_step(self):
        return self.n_calls < self.calls


@pytest.mark.parametrize("algo", ALL_ALGOS)
def test_a_callback_stop_mid_round_leaves_the_steps_run_counted(algo):
    # SB3's test_callbacks.py: EveryNTimesteps and the model agree on the steps run, also when training stops early
    model = algo("MlpPolicy", make_env("Discrete"), n_steps=8, seed=0, policy_kwargs={"net_arch": [16]})
    model.learn(model.steps_per_round)
    before = model.get_global_parameters()
    every = EveryNTimesteps(n_steps=4, callback=CallbackList([]))
    model.learn(10 * model.steps_per_round, callback=CallbackList([every, _StopAt(3)]), reset_num_timesteps=False)
    assert model.num_timesteps == every.num_timesteps == model.steps_per_round + 3 * model.n_envs
    assert th.equal(model.get_global_parameters(), before)  # the round itself is discarded (atomic)
    assert model._n_rounds == 1


class _VecOnlyDictEnv(gym.Env):
    """A Dict observation with one vector key (SB3's DummyDictEnv(vec_only=True)), deterministic given its seed."""

    def __init__(self):
        self.observation_space = spaces.Dict({"vec": spaces.Box(-1, 1, (3,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"vec": self.np_random.uniform(-1, 1, 3).astype(np.float32)}, {}

    def step(self, action):
        self.t += 1
        obs = {"vec": self.np_random.uniform(-1, 1, 3).astype(np.float32)}
        return obs, -float(np.sum(np.square(action))), False, self.t >= 20, {}


@pytest.mark.parametrize("algo", ALL_ALGOS)
def test_the_same_seed_gives_the_same_actions_for_dict_and_flattened_observations(algo):
    # SB3's test_dict_env.py::test_consistency: a Dict observation takes the torch rollout path, its flattened Box
    # the NumPy one; both draw their exploration noise from the same generator
    kwargs = {"n_steps": 16, "seed": 1, "gamma": 0.5, "policy_kwargs": {"net_arch": [8, 8]}}
    dict_model = algo("MultiInputPolicy", _VecOnlyDictEnv(), **kwargs)
    flat_model = algo("MlpPolicy", gym.wrappers.FlattenObservation(_VecOnlyDictEnv()), **kwargs)
    assert not dict_model._numpy_rollout and flat_model._numpy_rollout
    for model in (dict_model, flat_model):
        model.learn(2 * model.steps_per_round)
    th.testing.assert_close(dict_model.get_global_parameters(), flat_model.get_global_parameters())
    obs = {"vec": np.linspace(-1, 1, 3, dtype=np.float32)}
    dict_action = dict_model.predict(obs, deterministic=True)[0]
    np.testing.assert_allclose(dict_action, flat_model.predict(obs["vec"], deterministic=True)[0], rtol=1e-5)


class _SubclassedBox(spaces.Box):
    pass


class _SubclassedSpaceEnv(gym.Env):
    def __init__(self):
        self.observation_space = _SubclassedBox(-1, 1, shape=(2,), dtype=np.float32)
        self.action_space = _SubclassedBox(-1, 1, shape=(2,), dtype=np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, bool(self.np_random.random() > 0.5), False, {}


@pytest.mark.parametrize("algo", ALL_ALGOS)
def test_a_subclassed_box_action_space_is_a_box(algo):
    # SB3's test_predict.py::test_subclassed_space_env
    model = algo("MlpPolicy", _SubclassedSpaceEnv(), n_steps=8, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(model.steps_per_round)
    action, _ = model.predict(np.zeros(2, np.float32))
    assert action.shape == (2,) and model._actor.continuous


@pytest.mark.parametrize("algo", ALL_ALGOS)
def test_sb3s_get_set_parameters_round_trip_changes_every_tensor(algo):
    # SB3's test_save_load.py::test_save_load: every tensor of every state dict but the last is randomised and must
    # change (an empty tensor never does), and exact_match refuses a missing object or tensor
    model = make_model(algo, {}, "Box")
    original = copy.deepcopy(model.get_parameters())
    with pytest.raises(ValueError, match="Names of parameters do not match"):
        model.set_parameters(dict(list(original.items())[:-1]), exact_match=True)
    randomised = {
        name: params if "optim" in name else {key: th.rand_like(value) for key, value in list(params.items())[:-1]}
        for name, params in original.items()
    }
    model.set_parameters(randomised, exact_match=False)
    new = model.get_parameters()
    for name, params in original.items():
        if "optim" in name:
            continue
        *changed, last = params
        assert th.equal(new[name][last], params[last]), f"{name}.{last}"
        for key in changed:
            assert params[key].numel() > 0 and not th.allclose(new[name][key], params[key]), f"{name}.{key}"


@pytest.mark.parametrize("algo", ALL_ALGOS)
def test_learn_announces_whole_rounds_once(algo, fresh_announcements):
    model = make_model(algo, {}, "Discrete")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.learn(2 * model.steps_per_round)  # whole rounds: nothing to announce
    asked = model.steps_per_round - 1
    with pytest.warns(FederatedDifferenceWarning, match=rf"learn\({asked}\) runs 1 whole round\(s\) of steps_per_round="):
        model.learn(asked)
    assert model.num_timesteps == model.steps_per_round
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.learn(65)  # once per process


@pytest.mark.parametrize("algo", ALL_ALGOS)
def test_an_env_id_builds_one_env_as_sb3_does(algo, fresh_announcements):
    """SB3's test_callbacks / test_deterministic: one env from an env id, so ``n_calls`` counts env steps."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FederatedDifferenceWarning)  # nothing differs from SB3 here
        model = algo("MlpPolicy", "Pendulum-v1", n_steps=8, policy_kwargs={"net_arch": [8]}, seed=0)
    assert model.get_env().num_envs == 1 and model.n_envs_per_agent == 1
    every = EveryNTimesteps(n_steps=16, callback=CheckpointCallback(10**9, "unused"))
    model.learn(2 * model.steps_per_round, callback=every)
    assert every.num_timesteps == every.n_calls == model.num_timesteps == 2 * model.steps_per_round
    env = model.get_env()
    obs = env.reset()
    actions, rewards = [], []
    for _ in range(5):
        action, _ = model.predict(obs, deterministic=False)
        obs, reward, _, _ = env.step(action)
        actions.append(action)
        rewards.append(reward)
    assert np.shape(sum(actions)) == (1, 1) and np.shape(sum(rewards)) == (1,)  # SB3's test_deterministic sums these
    assert algo("MlpPolicy", "CartPole-v1", n_steps=8, n_envs_per_agent=3, n_agents=2).get_env().num_envs == 6


@pytest.mark.parametrize("algo", ALL_ALGOS)
def test_invalid_hyperparameters_are_assertion_errors_too(algo):
    """SB3 checks its hyperparameters with ``assert``: code catching AssertionError catches these as well."""
    from sb3_fedpg.common.hyperparams import HyperparameterError

    for bad in ({"n_steps": 0}, {"learning_rate": -1.0}, {"gamma": 1.5}):
        with pytest.raises(AssertionError) as caught:
            algo("MlpPolicy", "CartPole-v1", **bad)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, HyperparameterError)
    if algo is FederatedPPO:
        with pytest.raises(AssertionError, match="clip_range_vf must be a finite number > 0"):
            algo("MlpPolicy", "CartPole-v1", clip_range_vf=-0.2)


def test_ppo_clip_ranges_are_sb3_float_schedules_that_survive_save_load(tmp_path):
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule

    model = FederatedPPO("MlpPolicy", "Pendulum-v1", n_steps=64, n_epochs=1, clip_range_vf=0.5, seed=0)
    assert isinstance(model.clip_range, FloatSchedule) and isinstance(model.clip_range.value_schedule, ConstantSchedule)
    assert model.clip_range.value_schedule.val == 0.2 and model.clip_range_vf(1.0) == 0.5
    model.learn(128)
    model.save(tmp_path / "m.zip")
    loaded = FederatedPPO.load(tmp_path / "m.zip", env=model.get_env())
    assert isinstance(loaded.clip_range, FloatSchedule) and loaded.clip_range.value_schedule.val == 0.2
    assert loaded.clip_range_vf(0.3) == 0.5
    # a schedule is kept as given (a lambda is wrapped, not called ahead of time): SB3's test_save_load_backward_compatible
    scheduled = FederatedPPO("MlpPolicy", "Pendulum-v1", n_steps=64, learning_rate=lambda _: 1e-3, clip_range=lambda p: p / 10)
    assert scheduled.clip_range(1.0) == pytest.approx(0.1) and scheduled.clip_range(0.5) == pytest.approx(0.05)
    scheduled.learn(128)  # two rounds; a round's schedules are read at the progress before its rollout (0.5 for the 2nd)
    assert scheduled.logger.name_to_value["train/clip_range"] == pytest.approx(scheduled.clip_range(0.5))


def test_ppo_checks_its_rollout_size_as_sb3_does():
    """SB3's test_ppo_warnings: a single sample cannot be normalised; a truncated minibatch is announced."""
    with pytest.raises(AssertionError, match="n_steps \\* n_envs must be greater than 1"):
        FederatedPPO("MlpPolicy", "Pendulum-v1", n_steps=1)
    FederatedPPO("MlpPolicy", "Pendulum-v1", n_steps=1, batch_size=1, normalize_advantage=False).learn(4)
    FederatedPPO("MlpPolicy", "Pendulum-v1", n_steps=1, n_agents=2)  # the shared scale pools the agents' two samples
    with pytest.warns(UserWarning, match="there will be a truncated mini-batch of size 1"):
        model = FederatedPPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=63, verbose=1)
    model.learn(64)
    loss = model.logger.name_to_value["train/loss"]
    means = {k: model.logger.name_to_value[f"train/{k}"] for k in ("policy_gradient_loss", "entropy_loss", "value_loss")}
    assert np.isfinite(loss) and loss > 0
    assert loss == pytest.approx(means["policy_gradient_loss"] + 0.0 * means["entropy_loss"] + 0.5 * means["value_loss"])
    assert model.logger.name_to_value["train/std"] == pytest.approx(float(th.exp(model.policy.log_std).mean()))

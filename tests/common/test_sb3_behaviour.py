"""
What SB3's own tests expect of an algorithm (save/load of the model and of the policy alone, ``set_env`` with
another number of envs, deterministic training, callbacks, progress bar, ``evaluate_policy``), parametrized over
the four action spaces, both algorithms and FederatedPG's estimators. Written for this library, after SB3's
tests/test_save_load.py, test_deterministic.py, test_callbacks.py and test_predict.py.
"""

import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import (
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

from sb3_fedpg import FederatedPG, FederatedPPO, make_federated_vec_env
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
def test_set_env_with_another_number_of_envs(algo, kwargs, tmp_path):
    model = make_model(algo, kwargs, "Discrete").learn(100)
    model.set_env(make_env("Discrete", n_envs_per_agent=3))  # same agents, 3 envs each: works
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
        warnings.simplefilter("error")  # neither the env-type nor the Monitor warning
        model.learn(600, callback=callbacks)
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

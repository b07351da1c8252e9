import numpy as np
import pytest
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from sb3_fedpg import FederatedPG, make_federated_vec_env


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(local_steps=0), "local_steps must be a positive integer"),
        (dict(local_steps=2.5), "local_steps must be a positive integer"),
        (dict(n_steps=-1), "n_steps must be a positive integer"),
        (dict(n_envs_per_agent=0), "n_envs_per_agent must be a positive integer"),
        (dict(n_agents=0), "n_agents must be a positive integer"),
        (dict(learning_rate=0.0), "learning_rate must be a finite number > 0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number > 0"),
        (dict(server_learning_rate=-1.0), "server_learning_rate must be a finite number > 0"),
        (dict(critic_learning_rate=0), "critic_learning_rate must be a finite number > 0"),
        (dict(gamma=0.0), r"gamma must be in \(0, 1\]"),
        (dict(gamma=1.5), r"gamma must be in \(0, 1\]"),
        (dict(gae_lambda=2.0), r"gae_lambda must be in \[0, 1\]"),
        (dict(estimator="ppo"), "unknown estimator 'ppo'"),
        (dict(baseline="critic"), "unknown baseline 'critic'"),
        (dict(local_optimizer="rmsprop"), "unknown local_optimizer 'rmsprop'"),
        (dict(max_grad_norm=0.0), "max_grad_norm must be a finite number > 0"),
        (dict(ent_coef=-0.1), "ent_coef must be a finite number >= 0"),
    ],
)
def test_invalid_hyperparameters(kwargs, message, monkeypatch):
    # Any env construction would be a bug: validation comes first.
    def no_env(*args, **kw):
        raise AssertionError("an env was built before the hyperparameters were validated")

    monkeypatch.setattr("sb3_fedpg.common.federated_algorithm.make_federated_vec_env", no_env)
    with pytest.raises(ValueError, match=message):
        FederatedPG("MlpPolicy", "CartPole-v1", **kwargs)


def test_agents_do_not_divide_envs():
    from stable_baselines3.common.env_util import make_vec_env

    with pytest.raises(ValueError, match="5 envs cannot be split evenly between 2 agents"):
        FederatedPG("MlpPolicy", make_vec_env("CartPole-v1", n_envs=5), n_agents=2)


def test_corrupt_and_truncated_checkpoints(tmp_path):
    model = FederatedPG("MlpPolicy", "CartPole-v1", n_steps=4, local_steps=1, n_envs_per_agent=2)
    path = tmp_path / "model.zip"
    model.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip file at all")
    for bad in (truncated, garbage):
        before = bad.read_bytes()
        with pytest.raises(ValueError, match="not a readable FederatedPG checkpoint"):
            FederatedPG.load(bad)
        assert bad.read_bytes() == before  # nothing is lost or rewritten


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    model = FederatedPG("MlpPolicy", "CartPole-v1", n_steps=4, local_steps=1, n_envs_per_agent=2)
    path = tmp_path / "model.zip"
    model.save(path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("stable_baselines3.common.base_class.save_to_zip_file", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]  # no temp file left behind


def test_nan_gradient_names_agent_and_keeps_parameters():
    def reward_fns():
        ok = lambda obs, action, next_obs, reward: reward
        huge = lambda obs, action, next_obs, reward: np.full(len(obs), 3e38, dtype=np.float32)
        return [ok, huge, ok]

    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2, reward_fns=reward_fns(), seed=0)
    model = FederatedPG("MlpPolicy", env, n_steps=8, local_steps=2, normalize_advantage=False)
    before = model.get_global_parameters()
    with pytest.raises(FloatingPointError, match=r"agent\(s\) \[1\]"):
        model.learn(100)
    th.testing.assert_close(model.get_global_parameters(), before)


def test_set_global_parameters_rejects_bad_vectors():
    model = FederatedPG("MlpPolicy", "CartPole-v1", n_steps=4, local_steps=1, n_envs_per_agent=2)
    with pytest.raises(ValueError, match="expected a flat vector"):
        model.set_global_parameters(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        model.set_global_parameters(np.full(model.n_federated_params, np.nan))


class LinearExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space, features_dim=8):
        super().__init__(observation_space, features_dim)
        self.linear = th.nn.Linear(observation_space.shape[0], features_dim)

    def forward(self, obs):
        return self.linear(obs)


def test_custom_features_extractor_is_federated():
    # a parametrised extractor is part of the federated actor (and each local critic has its own copy)
    model = FederatedPG("MlpPolicy", "CartPole-v1", policy_kwargs=dict(features_extractor_class=LinearExtractor))
    extractor = model.policy.pi_features_extractor
    assert isinstance(extractor, LinearExtractor) and extractor is not model.policy.vf_features_extractor
    assert model._actor.parameters[: len(list(extractor.parameters()))] == list(extractor.parameters())


def test_env_kwargs_needs_env_id():
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2)
    with pytest.raises(ValueError, match="env_kwargs is only used when env is an env id"):
        FederatedPG("MlpPolicy", env, env_kwargs={"heterogeneity": 0.5})


def test_checkpoint_of_another_algorithm(tmp_path):
    from stable_baselines3 import A2C

    A2C("MlpPolicy", "CartPole-v1").save(tmp_path / "a2c.zip")
    before = (tmp_path / "a2c.zip").read_bytes()
    with pytest.raises(ValueError, match="not a readable FederatedPG checkpoint"):
        FederatedPG.load(tmp_path / "a2c.zip")
    assert (tmp_path / "a2c.zip").read_bytes() == before


def test_env_raising_mid_rollout_loses_nothing(tmp_path):
    calls = {"n": 0}

    def flaky(obs, action, next_obs, reward):
        calls["n"] += 1
        if calls["n"] > 16 + 5:  # a round is 16 vector steps: fail 5 steps into the second round
            raise RuntimeError("sensor failure in agent 1's env")
        return reward

    ok = lambda obs, action, next_obs, reward: reward
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2, reward_fns=[ok, flaky], seed=0)
    model = FederatedPG("MlpPolicy", env, n_steps=8, local_steps=2, seed=0)
    model.learn(64)  # first round fine
    model.save(tmp_path / "good.zip")
    good = model.get_global_parameters()
    with pytest.raises(RuntimeError, match="sensor failure"):
        model.learn(10_000)
    # The round in flight was discarded: the global policy is the last good one, and the saved file is intact.
    th.testing.assert_close(model.get_global_parameters(), good)
    th.testing.assert_close(FederatedPG.load(tmp_path / "good.zip").get_global_parameters(), good)


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_untrusted_file_loads_weights_without_unpickling(tmp_path):
    import base64
    import json
    import zipfile

    import cloudpickle

    model = FederatedPG("MlpPolicy", "CartPole-v1", n_steps=4, local_steps=1, n_envs_per_agent=2, seed=0)
    model.learn(50)
    path = tmp_path / "model.zip"
    model.save(path)
    # Plant a payload in the pickled part of the file, as an attacker would.
    marker = tmp_path / "code_ran"
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    data["gamma"] = {
        ":type:": "<class 'object'>",
        ":serialized:": base64.b64encode(cloudpickle.dumps(_Payload(str(marker)))).decode(),
    }
    files["data"] = json.dumps(data).encode()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    # The documented safe path: build the model yourself, read only the tensors (weights_only=True).
    fresh = FederatedPG("MlpPolicy", "CartPole-v1", n_steps=4, local_steps=1, n_envs_per_agent=2, seed=1)
    fresh.set_parameters(str(evil))
    assert not marker.exists()
    th.testing.assert_close(fresh.get_global_parameters(), model.get_global_parameters())
    # Whereas load() unpickles: only for trusted files (docs/robustness.md). Validation then rejects the
    # planted value, but the payload has already run.
    with pytest.raises(ValueError, match="gamma must be in"):
        FederatedPG.load(evil)
    assert marker.exists()

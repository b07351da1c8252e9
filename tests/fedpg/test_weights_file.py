"""save_weights / load_weights (= save(format="safetensors") / load(weights_only=True)): files that load without unpickling."""

import base64
import io
import json
import zipfile

import cloudpickle
import numpy as np
import pytest
import torch as th

from sb3_fedpg import FederatedPG, make_federated_vec_env
from sb3_fedpg.common.persistence import WeightsFileError

FAMILY = "sb3_fedpg/HeteroCartPole-v0"


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _serialized_payload(marker):
    # SB3's JSON form of a pickled attribute: unpickling it runs the payload.
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(cloudpickle.dumps(_Payload(str(marker)))).decode()}


def _env(n_agents=3, m=2):
    return make_federated_vec_env(FAMILY, n_agents=n_agents, n_envs_per_agent=m, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model = FederatedPG(
        "MlpPolicy",
        _env(),
        n_steps=8,
        local_steps=2,
        local_optimizer="adam",
        aggregator="trimmed_mean",
        aggregator_kwargs={"trim": 0.25},
        gamma=0.95,
        policy_kwargs={"net_arch": [16, 16], "activation_fn": th.nn.ReLU},
        seed=0,
    )
    model.learn(200)
    path = model.save_weights(tmp_path_factory.mktemp("weights") / "shared")
    return model, path


def _hp(**values):
    return lambda m: {**m, "hyperparameters": {**m["hyperparameters"], **values}}


def _rewrite(path, out, metadata=None, tensors=None):
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    if metadata is not None:
        files["metadata.json"] = json.dumps(metadata(json.loads(files["metadata.json"]))).encode()
    if tensors is not None:
        files["tensors.pt"] = tensors  # the first format's member (a file of the second format ignores it)
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out


def test_round_trip_restores_everything_and_trains_on(trained):
    model, path = trained
    assert path.suffix == ".zip"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["metadata.json", "tensors.safetensors"]
        metadata = json.loads(archive.read("metadata.json"))
    assert metadata["hyperparameters"]["aggregator"] == "trimmed_mean"
    assert metadata["policy_kwargs"] == {"net_arch": [16, 16], "activation_fn": "ReLU"}
    loaded = FederatedPG.load_weights(path, env=_env())
    assert (loaded.n_agents, loaded.gamma, loaded.local_optimizer) == (3, 0.95, "adam")
    assert type(loaded.aggregator).__name__ == "TrimmedMeanAggregator" and loaded.aggregator.trim == 0.25
    assert loaded.num_timesteps == model.num_timesteps and loaded._n_rounds == model._n_rounds
    assert th.equal(loaded.get_global_parameters(), model.get_global_parameters())
    assert th.equal(loaded.critics.params, model.critics.params)
    for name in ("exp_avg", "exp_avg_sq", "step_count"):
        assert th.equal(getattr(loaded.local_optimizer_state, name), getattr(model.local_optimizer_state, name))
    for a, b in zip(loaded.critic_optimizer.state.values(), model.critic_optimizer.state.values(), strict=True):
        assert all(th.equal(a[key], b[key]) for key in a)
    obs = np.zeros((4, 4), dtype=np.float32)
    assert (loaded.predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]).all()
    loaded.learn(100, reset_num_timesteps=False)
    for_prediction = FederatedPG.load_weights(path)  # no env: prediction only
    assert for_prediction.env is None and for_prediction.predict(obs)[0].shape == (4,)


def _legacy(metadata):
    # The first weights format (sb3_fedpg 0.1.0): the same JSON, tensors in a torch.save file.
    return {k: v for k, v in metadata.items() if k not in ("schedules", "settings", "state", "tensors")} | {
        "format": "sb3_fedpg.weights/1"
    }


def test_files_of_the_first_format_still_load(trained, tmp_path):
    model, path = trained
    buffer = io.BytesIO()
    th.save({name: getattr(model, name).state_dict() for name in model._get_torch_save_params()[0]}, buffer)
    legacy = _rewrite(path, tmp_path / "legacy.zip", metadata=_legacy, tensors=buffer.getvalue())
    loaded = FederatedPG.load(legacy, weights_only=True)
    assert th.equal(loaded.get_global_parameters(), model.get_global_parameters())
    assert th.equal(loaded.critics.params, model.critics.params)


def test_a_pickle_payload_in_the_tensors_never_runs(trained, tmp_path):
    _, path = trained
    marker = tmp_path / "code_ran"
    buffer = io.BytesIO()
    th.save({"policy": {"weight": _Payload(str(marker))}}, buffer)
    evil = _rewrite(path, tmp_path / "evil.zip", metadata=_legacy, tensors=buffer.getvalue())
    before = evil.read_bytes()
    with pytest.raises(WeightsFileError, match=r"tensors\.pt holds something other than plain tensors.*nothing in it was run"):
        FederatedPG.load_weights(evil)
    assert not marker.exists()
    assert evil.read_bytes() == before


def test_a_pickle_payload_in_the_metadata_never_runs(trained, tmp_path):
    _, path = trained
    marker = tmp_path / "code_ran"
    serialized = {
        ":type:": "<class 'object'>",
        ":serialized:": base64.b64encode(cloudpickle.dumps(_Payload(str(marker)))).decode(),
    }

    def plant(metadata):
        metadata["hyperparameters"]["gamma"] = serialized
        return metadata

    evil = _rewrite(path, tmp_path / "evil.zip", metadata=plant)
    with pytest.raises(ValueError, match=r"metadata\.json: gamma must be in"):
        FederatedPG.load_weights(evil)
    assert not marker.exists()


def test_an_sb3_save_file_is_not_a_weights_file_and_its_pickles_do_not_run(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "model.zip")
    marker = tmp_path / "code_ran"
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = json.loads(archive.read("data"))
    data["gamma"] = {
        ":type:": "<class 'object'>",
        ":serialized:": base64.b64encode(cloudpickle.dumps(_Payload(str(marker)))).decode(),
    }
    with zipfile.ZipFile(tmp_path / "model.zip") as archive, zipfile.ZipFile(tmp_path / "evil.zip", "w") as out:
        for name in archive.namelist():
            out.writestr(name, json.dumps(data) if name == "data" else archive.read(name))
    with pytest.raises(WeightsFileError, match="this file contains pickled objects; load it with weights_only=False only if"):
        FederatedPG.load_weights(tmp_path / "evil.zip")
    assert not marker.exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: {**m, "format": "pickle"}, "'format' must be 'sb3_fedpg.weights/2'"),
        (lambda m: {**m, "algorithm": "A2C"}, "holds a 'A2C' model"),
        (lambda m: {**m, "n_agents": "3"}, "'n_agents' must be a positive integer"),
        (lambda m: {**m, "n_agents": 2}, "'n_agents' is 2, the tensors hold 3 critics"),
        (
            lambda m: {**m, "hyperparameters": {**m["hyperparameters"], "gamma": 7}},
            r"metadata\.json: gamma must be in \(0, 1\]",
        ),
        (
            lambda m: {**m, "hyperparameters": {**m["hyperparameters"], "estimator": "ppo"}},
            r"metadata\.json: unknown estimator 'ppo'",
        ),
        (_hp(evil=1), r"'hyperparameters' has unknown name\(s\) \['evil'\]"),
        (
            lambda m: {**m, "observation_space": {"type": "Tuple"}},
            "observation_space: 'type' must be 'Box', 'Discrete', 'MultiDiscrete', 'MultiBinary'",
        ),
        (
            lambda m: {**m, "observation_space": {**m["observation_space"], "shape": [5]}},
            "observation_space: 'low' must be a list of 5",
        ),
        (lambda m: {**m, "action_space": {"type": "Discrete", "n": -1}}, "action_space: 'n' must be an integer"),
        (lambda m: {**m, "action_space": {"type": "MultiDiscrete", "nvec": [2, 0]}}, "action_space: 'nvec' must be a list"),
        (lambda m: {**m, "action_space": {"type": "MultiBinary", "n": True}}, "action_space: 'n' must be an integer"),
        (lambda m: {**m, "policy_kwargs": {"activation_fn": "os.system"}}, r"policy_kwargs\['activation_fn'\] must be one of"),
        (lambda m: {**m, "policy": "evil.Policy"}, "'policy' must be one of"),
        (lambda m: [1, 2], "'format' must be"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(trained, tmp_path, edit, message):
    _, path = trained
    bad = _rewrite(path, tmp_path / "bad.zip", metadata=edit)
    before = bad.read_bytes()
    with pytest.raises(ValueError, match=message):
        FederatedPG.load_weights(bad)
    assert bad.read_bytes() == before


def test_not_a_weights_file_and_bad_arguments(trained, tmp_path):
    _, path = trained
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(path.read_bytes()[:200])
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    for bad in (truncated, garbage, tmp_path / "missing.zip"):
        with pytest.raises(WeightsFileError, match="it is not a weights-only model file"):
            FederatedPG.load_weights(bad)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        FederatedPG.load_weights(path, learning_rate=-1.0)
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['lerning_rate'\]"):
        FederatedPG.load_weights(path, lerning_rate=0.1)
    with pytest.raises(ValueError, match=r"n_agents=2 cannot be set by load\(\)"):
        FederatedPG.load_weights(path, n_agents=2)
    with pytest.raises(ValueError, match="2 agents x 3 envs each, but the model has 3 agents"):
        FederatedPG.load_weights(path, env=_env(n_agents=2, m=3))
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        FederatedPG.load_weights(
            path, env=make_federated_vec_env("sb3_fedpg/HeteroPendulum-v0", n_agents=3, n_envs_per_agent=1)
        )


@pytest.mark.parametrize("space", ["MultiDiscrete", "MultiBinary"])
def test_multi_action_spaces_round_trip(space, tmp_path):
    from stable_baselines3.common.envs import IdentityEnvMultiBinary, IdentityEnvMultiDiscrete

    maker = IdentityEnvMultiDiscrete if space == "MultiDiscrete" else IdentityEnvMultiBinary
    env = make_federated_vec_env([lambda: maker(3)] * 2, n_envs_per_agent=2, seed=0)
    model = FederatedPG("MlpPolicy", env, n_steps=8, seed=0).learn(100)
    loaded = FederatedPG.load_weights(model.save_weights(tmp_path / "w"))
    assert loaded.action_space == model.action_space
    obs = env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])

"""
Weights-only model files (``save(path, format="safetensors")``, ``load(path, weights_only=True)``): JSON + safetensors,
nothing unpickled, every federated algorithm's state restored so that prediction and further training are identical.
"""

import base64
import io
import json
import pickle
import zipfile

import cloudpickle
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.utils import LinearSchedule

from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM, make_federated_vec_env
from sb3_fedpg.common.adversarial import ByzantineAttack
from sb3_fedpg.common.aggregators import TrimmedMeanAggregator
from sb3_fedpg.common.safe_format import TENSORS, UnsafeToSaveError, WeightsFileError, file_kind

FAMILY = "sb3_fedpg/HeteroCartPole-v0"
SETTINGS = {
    FederatedPG: {"local_optimizer": "adam", "estimator": "gae", "local_steps": 2},
    FederatedPPO: {"batch_size": 16, "n_epochs": 2, "clip_range": LinearSchedule(0.3, 0.1, 1.0)},
    FederatedSVRPGM: {"estimator": "gae", "local_steps": 2},
}


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _env(seed=0):
    return make_federated_vec_env(FAMILY, n_agents=2, n_envs_per_agent=2, seed=seed)


def _model(algo, **extra):
    return algo(
        "MlpPolicy",
        _env(),
        n_steps=16,
        seed=0,
        learning_rate=LinearSchedule(0.01, 0.002, 1.0),
        participation=0.5,  # the participation sampler's state must travel too
        aggregator=TrimmedMeanAggregator(trim=0.25),  # built directly: its parameters are read from it
        policy_kwargs={"net_arch": [8], "activation_fn": th.nn.ReLU},
        **{**SETTINGS[algo], **extra},
    )


@pytest.fixture(scope="module", params=[FederatedPG, FederatedPPO, FederatedSVRPGM], ids=lambda c: c.__name__)
def trained(request, tmp_path_factory):
    model = _model(request.param).learn(300)
    path = tmp_path_factory.mktemp("safe") / "model.zip"
    model.save(path, format="safetensors")
    return request.param, model, path  # test_round_trip_... trains the model on: other tests read it from the file


def _forbid_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    class Refused:
        def __init__(self, *args, **kwargs):
            refuse()

    for module, name in ((pickle, "loads"), (pickle, "load"), (cloudpickle, "loads"), (cloudpickle, "load")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refused)
    monkeypatch.setattr(th, "load", refuse)
    monkeypatch.setattr(th.serialization, "load", refuse)


def test_round_trip_predicts_and_trains_on_identically(trained, monkeypatch):
    algo, model, path = trained
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["metadata.json", TENSORS]
        metadata = json.loads(archive.read("metadata.json"))
    assert file_kind(path) == "weights"
    assert metadata["hyperparameters"]["aggregator"] == "trimmed_mean"
    assert metadata["hyperparameters"]["aggregator_kwargs"] == {"trim": 0.25}
    assert metadata["schedules"]["learning_rate"] == {
        "type": "LinearSchedule",
        "start": 0.01,
        "end": 0.002,
        "end_fraction": 1.0,
    }
    with monkeypatch.context() as patched:
        _forbid_unpickling(patched)
        loaded = algo.load(path, env=_env(seed=5), weights_only=True)
    assert type(loaded.learning_rate) is LinearSchedule and loaded.aggregator.trim == 0.25
    assert (loaded.num_timesteps, loaded._n_rounds) == (model.num_timesteps, model._n_rounds)
    # every tensor of every saved object (policy, critics, optimiser states, correction statistics, server memory)
    for name in model._get_torch_save_params()[0]:
        ours, theirs = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        flat = [(k, v) for k, v in ours.items()] if name != "critic_optimizer" or algo is FederatedPPO else []
        for key, value in flat:
            assert th.equal(value, theirs[key]), (name, key)
        if name == "critic_optimizer" and algo is not FederatedPPO:  # a torch optimiser: state keyed by int
            for a, b in zip(ours["state"].values(), theirs["state"].values(), strict=True):
                assert all(th.equal(a[k], b[k]) for k in a)
            assert ours["param_groups"] == theirs["param_groups"]
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    # the same seed: the same parameters after more training (schedules, progress, generators, local state restored)
    model.set_env(_env(seed=5))
    for m in (model, loaded):
        m.set_random_seed(3)
        m.learn(200, reset_num_timesteps=False)
    assert th.equal(loaded.get_global_parameters(), model.get_global_parameters())
    assert th.equal(loaded.critics.params, model.critics.params)


def test_nothing_is_unpickled_and_sb3_files_are_refused_under_weights_only(trained, tmp_path, monkeypatch):
    algo, model, path = trained
    marker = tmp_path / "code_ran"
    model.save(tmp_path / "sb3.zip")  # format="sb3": pickles inside
    # an SB3 file with a planted payload, and a weights file with the same payload added as SB3's 'data' member
    with zipfile.ZipFile(tmp_path / "sb3.zip") as archive:
        data = json.loads(archive.read("data"))
        files = {name: archive.read(name) for name in archive.namelist()}
    data["gamma"] = {
        ":type:": "<class 'object'>",
        ":serialized:": base64.b64encode(cloudpickle.dumps(_Payload(str(marker)))).decode(),
    }
    files["data"] = json.dumps(data).encode()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    mixed = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(mixed, "w") as archive:
        for name in source.namelist():
            archive.writestr(name, source.read(name))
        archive.writestr("data", files["data"])
    for bad in (tmp_path / "sb3.zip", evil, mixed):
        with monkeypatch.context() as patched:
            _forbid_unpickling(patched)
            with pytest.raises(WeightsFileError, match="contains pickled objects; load it with weights_only=False only if"):
                algo.load(bad, weights_only=True)
    assert not marker.exists()
    with pytest.raises(WeightsFileError, match="contains pickled objects"):
        algo.load_weights(evil)
    # without weights_only a weights file is still read safely (the format comes from the content, not the name)
    renamed = tmp_path / "looks_like_sb3.zip"
    renamed.write_bytes(path.read_bytes())
    with monkeypatch.context() as patched:
        _forbid_unpickling(patched)
        assert algo.load(renamed).num_timesteps == json.loads(zipfile.ZipFile(path).read("metadata.json"))["num_timesteps"]


def test_a_pickle_in_a_json_field_is_only_data(trained, tmp_path):
    algo, _, path = trained
    marker = tmp_path / "code_ran"
    payload = base64.b64encode(cloudpickle.dumps(_Payload(str(marker)))).decode()
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        tensors = archive.read(TENSORS)
    metadata["schedules"]["learning_rate"] = {":type:": "<class 'function'>", ":serialized:": payload}
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr(TENSORS, tensors)
    with pytest.raises(WeightsFileError, match=r"schedules\['learning_rate'\] must be"):
        algo.load(bad, weights_only=True)
    assert not marker.exists()


def _rewrite(path, out, metadata=None, tensors=None, drop=()):
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist() if name not in drop}
    if metadata is not None:
        files["metadata.json"] = json.dumps(metadata(json.loads(files["metadata.json"]))).encode()
    if tensors is not None:
        files[TENSORS] = tensors
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out


def _set(key, value):
    def edit(metadata):
        node = metadata
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        return metadata

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(tensors=b"\x00" * 64), "tensors.safetensors is not a valid safetensors file"),
        (dict(drop=(TENSORS,)), "there is no tensors.safetensors in the archive"),
        (dict(metadata=_set("tensors", {"tensor": "evil"})), r"'tensors' skeleton: names tensor 'evil'"),
        (dict(metadata=_set("tensors", {"exec": "print(1)"})), "'tensors' skeleton: unknown node kind 'exec'"),
        (dict(metadata=_set("schedules", {"learning_rate": {"type": "LinearSchedule", "start": "nan"}})), "schedules"),
        (dict(metadata=_set("state.participation_rng", {"bit_generator": "MT19937"})), "state.participation_rng must be"),
        (dict(metadata=_set("state.advantage_ratio", [1.0])), "state.advantage_ratio' must be null or a list of 2"),
        (dict(metadata=_set("settings", {"seed": "0"})), "'settings' may hold"),
        (dict(metadata=_set("format", "sb3_fedpg.weights/99")), "'format' must be 'sb3_fedpg.weights/2'"),
    ],
)
def test_corrupt_files_give_a_clear_error(trained, tmp_path, edit, message):
    algo, _, path = trained
    bad = _rewrite(path, tmp_path / "bad.zip", **edit)
    before = bad.read_bytes()
    with pytest.raises(WeightsFileError, match=message):
        algo.load(bad, weights_only=True)
    assert bad.read_bytes() == before


def test_truncated_and_foreign_files(trained, tmp_path):
    algo, _, path = trained
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    for bad in (truncated, garbage, tmp_path / "missing.zip"):
        with pytest.raises(WeightsFileError, match="it is not a weights-only model file"):
            algo.load(bad, weights_only=True)
    other = FederatedPPO if algo is not FederatedPPO else FederatedPG
    with pytest.raises(WeightsFileError, match=f"holds a '{algo.__name__}' model"):
        other.load(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(learning_rate=lambda progress: 0.01 * progress), r"learning_rate is a lambda \(a schedule given as code\)"),
        (dict(aggregator=lambda stacked: stacked.mean(0)), "aggregator is a custom callable"),
        (dict(attack=ByzantineAttack([0])), "attack is .*Set model.attack = None before saving"),
    ],
)
def test_what_cannot_be_described_is_refused_at_save_time(tmp_path, change, message):
    model = _model(FederatedPG)
    for name, value in change.items():
        setattr(model, name, value)
    with pytest.raises(UnsafeToSaveError, match=message) as error:
        model.save(tmp_path / "model.zip", format="safetensors")
    assert "use save(..., format='sb3')" in str(error.value)
    assert not (tmp_path / "model.zip").exists()
    with pytest.raises(ValueError, match="unknown format 'pickle'"):
        model.save(tmp_path / "model.zip", format="pickle")


def test_buffers_and_set_parameters(trained, monkeypatch):
    algo, _, path = trained
    model = algo.load(path)
    buffer = io.BytesIO()
    model.save(buffer, format="safetensors")
    buffer.seek(0)
    loaded = algo.load(buffer, weights_only=True)
    assert th.equal(loaded.get_global_parameters(), model.get_global_parameters())
    fresh = _model(algo)
    with monkeypatch.context() as patched:
        _forbid_unpickling(patched)
        fresh.set_parameters(str(path))
    assert th.equal(fresh.get_global_parameters(), model.get_global_parameters())
    assert th.equal(fresh.critics.params, model.critics.params)

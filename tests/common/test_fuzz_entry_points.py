"""
Property-based fuzzing of every entry point that takes user or peer input: the FederatedPG constructor and
``load`` kwargs, ``make_federated_vec_env``, ``load_weights`` metadata, the Flower run config and the Flower reply
validation. Bad input gives a ``ValueError``/``TypeError`` whose message names the field, never another exception,
and a file involved is left as it was. The whole module runs in well under a minute.
"""

import json
import zipfile
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sb3_fedpg import FederatedPG, make_federated_vec_env
from sb3_fedpg.common.hyperparams import FedPGHyperparams
from sb3_fedpg.common.validation import clean_metrics, update_problem
from sb3_fedpg.flower.config import DEFAULT_RUN_CONFIG, parse_run_config
from sb3_fedpg.flower.server_app import screen_replies

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

junk = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
)
names = st.sampled_from(FedPGHyperparams.names())


class _Accepted(Exception):
    pass


def _names_a_field(error, fields):
    return any(str(field) in str(error) or repr(field) in str(error) for field in fields)


@FAST
@given(st.dictionaries(names, junk, min_size=1, max_size=3))
def test_constructor(kwargs):
    def accepted(*args, **kw):
        raise _Accepted

    with mock.patch("sb3_fedpg.common.federated_algorithm.make_federated_vec_env", accepted):
        try:
            FederatedPG("MlpPolicy", "CartPole-v1", **kwargs)
        except _Accepted:
            FedPGHyperparams(**kwargs)  # then every value was valid
        except (ValueError, TypeError) as error:
            assert _names_a_field(error, kwargs), error


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    model = FederatedPG("MlpPolicy", "CartPole-v1", n_agents=2, n_envs_per_agent=1, n_steps=4, local_steps=1, seed=0)
    model.save(folder / "model.zip")
    model.save_weights(folder / "weights.zip")
    return folder


@SLOW
@given(st.dictionaries(st.one_of(names, st.text(min_size=1, max_size=8)), junk, min_size=1, max_size=2))
def test_load_kwargs(saved, kwargs):
    path = saved / "model.zip"
    before = path.read_bytes()
    try:
        model = FederatedPG.load(path, **kwargs)
    except (ValueError, TypeError) as error:
        assert _names_a_field(error, kwargs), error
    else:
        FedPGHyperparams.from_object(model)
    assert path.read_bytes() == before


metadata_fields = st.sampled_from(
    ["format", "algorithm", "policy", "observation_space", "action_space", "n_agents", "n_envs_per_agent",
     "hyperparameters", "policy_kwargs", "num_timesteps", "n_rounds", "schedules", "settings", "state", "tensors"]
)  # fmt: skip
json_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)),
    max_leaves=8,
)


@SLOW
@given(metadata_fields, json_junk, st.one_of(st.none(), names))
def test_load_weights_metadata(saved, tmp_path_factory, field, value, hyperparameter):
    source = saved / "weights.zip"
    with zipfile.ZipFile(source) as archive:
        metadata = json.loads(archive.read("metadata.json"))
        tensors = archive.read("tensors.safetensors")
    if hyperparameter is not None:
        metadata["hyperparameters"][hyperparameter] = value
        field = hyperparameter
    else:
        metadata[field] = value
    path = tmp_path_factory.mktemp("w") / "weights.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("tensors.safetensors", tensors)
    before = path.read_bytes()
    try:
        FederatedPG.load_weights(path)
    except (ValueError, TypeError) as error:
        assert _names_a_field(error, [field]), error
    assert path.read_bytes() == before


small = st.one_of(st.integers(-2, 3), junk)


@SLOW
@given(
    st.sampled_from(["n_agents", "n_envs_per_agent", "env_kwargs", "seed", "vectorization_mode", "heterogeneity"]),
    small,
    st.sampled_from(["sb3_fedpg/HeteroCartPole-v0", "CartPole-v1"]),
)
def test_make_federated_vec_env(field, value, env_id):
    kwargs = {"n_agents": 2, "n_envs_per_agent": 1}
    if field == "heterogeneity":
        kwargs["env_kwargs"] = {"heterogeneity": value}
    else:
        kwargs[field] = value
    try:
        env = make_federated_vec_env(env_id, **kwargs)
    except (ValueError, TypeError) as error:
        named = [field] + (list(value) if field == "env_kwargs" and isinstance(value, dict) else [])
        assert _names_a_field(error, named), error
    else:
        env.close()


run_config_keys = st.sampled_from(sorted(DEFAULT_RUN_CONFIG))


@FAST
@given(st.dictionaries(st.one_of(run_config_keys, st.text(min_size=1, max_size=8)), junk, min_size=1, max_size=3))
def test_flower_run_config(config):
    try:
        parse_run_config(config)
    except ValueError as error:
        assert _names_a_field(error, config), error


arrays = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6).map(np.array),
    st.lists(st.integers(-(10**30), 10**30), max_size=6).map(lambda v: np.array(v, dtype=object)),
    st.lists(st.text(max_size=2), max_size=6).map(np.array),
    st.lists(st.complex_numbers(), max_size=5).map(np.array),
    st.lists(st.lists(st.floats(-1, 1), min_size=5, max_size=5), max_size=3).map(np.array),
    junk,
)
metric_values = st.one_of(junk, st.lists(st.floats(allow_nan=True), max_size=3))


@FAST
@given(arrays, st.one_of(st.none(), st.floats(0, 1e6)))
def test_update_problem_never_raises(vector, max_norm):
    problem = update_problem(vector, 5, max_norm)
    if problem is None:
        array = np.asarray(vector, dtype=np.float64)
        assert array.shape == (5,) and np.isfinite(array).all()
        assert max_norm is None or np.linalg.norm(array) <= max_norm
    else:
        assert isinstance(problem, str) and problem


@FAST
@given(
    st.lists(
        st.tuples(
            arrays,
            st.one_of(st.dictionaries(st.sampled_from(["agent", "ep_rew_mean", "num_timesteps", "x"]), metric_values), junk),
        ),
        max_size=6,
    ),
    st.one_of(st.none(), st.floats(1, 100)),
)
def test_reply_screening_never_raises(replies, ratio):
    received = [(node, vector, record) for node, (vector, record) in enumerate(replies)]
    accepted, metrics, problems = screen_replies(received, "delta", 5, 1e6, ratio)
    assert set(accepted) == set(metrics) and not set(accepted) & set(problems)
    assert set(accepted) | set(problems) == {node for node, _, _ in received}
    agents = [m["agent"] for m in metrics.values() if "agent" in m]
    assert len(agents) == len(set(agents))
    for node, vector in accepted.items():
        assert update_problem(vector, 5, 1e6) is None
        for key, value in metrics[node].items():
            assert isinstance(key, str) and np.isfinite(value)
        clean, _ = clean_metrics(metrics[node])
        assert clean == metrics[node]

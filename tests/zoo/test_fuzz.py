"""Property-based fuzzing of the zoo config parser: bad input gives a ZooConfigError naming the field, and nothing else."""

import os
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sb3_fedpg import FederatedPG
from sb3_fedpg.zoo import default_config_file
from sb3_fedpg.zoo.config import (
    RUNNER_KEYS,
    ZooConfigError,
    _constructor_hints,
    apply_overrides,
    load_config_file,
    parse_overrides,
    parse_yaml,
    validate_hyperparams,
)
from sb3_fedpg.zoo.train import train

BASE = {"n_timesteps": 1000, "n_agents": 2, "n_envs": 4, "policy": "MlpPolicy"}
PARAMS, _ = _constructor_hints(FederatedPG)
KEYS = sorted(set(RUNNER_KEYS) | {k for k in PARAMS if k not in ("self", "env", "policy")})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["lin_0.1", "lin_x", "nn.Tanh", "os.system", "!!python/name:os.system", "1e6", "-1"]),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(key=st.sampled_from(KEYS) | st.text(min_size=1, max_size=10), value=values)
def test_any_value_for_any_key_is_accepted_or_named(key, value):
    entry = {**BASE, key: value}
    try:
        hyperparams = validate_hyperparams(entry, FederatedPG, "fuzz.yml [X]")
    except ZooConfigError as error:
        message = str(error)
        assert message.startswith("fuzz.yml [X]: ")
        named = {key, "n_envs", "n_envs_per_agent", "n_agents", "policy_kwargs"}  # n_envs checks name both keys
        assert any(repr(name)[:-1] in message for name in named), message  # 'policy_kwargs.x' names the key
        return
    assert hyperparams.n_timesteps >= 1  # accepted: a value of the type the constructor annotates


@FAST
@given(text=st.text(alphabet="{}[]:,&*!-|>'\" \n\tabcdlo01.", max_size=80))
def test_random_yaml_text_gives_a_zoo_error_or_plain_values(text):
    try:
        value = parse_yaml(text, "fuzz")
    except ZooConfigError as error:
        assert str(error).startswith("fuzz: ")
        return
    yaml.safe_dump(value)  # plain Python values only (a safe dumper refuses anything else)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(2, 12), width=st.integers(2, 12))
def test_alias_expansion_is_bounded_and_fast(depth, width):
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, depth)]
    try:
        parse_yaml("\n".join(lines), "fuzz")
        assert width ** (depth - 1) < 20_000  # accepted only when small (written nodes + at most 10000)
    except ZooConfigError as error:
        assert "aliases may add at most 10000 values" in str(error)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(["local_steps", "n_steps", "gamma", "learning_rate", "correction", "policy_kwargs", "env_kwargs"]),
    text=st.sampled_from(["[1, 2]", "{a: 1}", "'many'", "lin_oops", "!!python/name:os.system ''", "&a [*a]", "[[[["]),
)
def test_train_refuses_before_making_anything(tmp_path_factory, key, text):
    folder = tmp_path_factory.mktemp("fuzz")
    conf = folder / "c.yml"
    conf.write_text(pathlib.Path(default_config_file("fedpg")).read_text())
    before = {p: p.read_bytes() for p in folder.rglob("*")}
    argv = ["--env", "CartPole-v1", "--conf-file", str(conf), "-f", str(folder / "logs"), "--verbose", "0"]
    with pytest.raises(ZooConfigError) as error:
        train([*argv, "-params", f"{key}:{text}"])
    assert key in str(error.value) or "not valid YAML" in str(error.value) or "refused" in str(error.value)
    assert {p: p.read_bytes() for p in folder.rglob("*")} == before  # no folder made, the config untouched


@FAST
@given(items=st.lists(st.text(alphabet="abn_.:{}[]1 ", max_size=15), max_size=4))
def test_random_overrides_give_a_zoo_error_or_a_mapping(items):
    try:
        overrides = parse_overrides(items)
    except ZooConfigError as error:
        assert "override" in str(error)
        return
    assert isinstance(apply_overrides(BASE, overrides), dict)


@FAST
@given(content=values)
def test_random_file_content_is_refused_with_the_file_named(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("conf") / "c.yml"
    path.write_text(yaml.safe_dump(content))
    before = path.read_bytes()
    try:
        loaded = load_config_file(path)
    except ZooConfigError as error:
        assert str(path) in str(error)
    else:
        assert isinstance(loaded, dict) and all(isinstance(v, dict) for v in loaded.values())
    assert path.read_bytes() == before and os.listdir(path.parent) == ["c.yml"]

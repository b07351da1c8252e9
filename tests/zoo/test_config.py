import pickle
import tracemalloc

import pytest
import torch as th
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.utils import LinearSchedule

from sb3_fedpg import FederatedPG
from sb3_fedpg.zoo import ZOO_ALGOS, default_config_file, get_algo_class
from sb3_fedpg.zoo.config import (
    ZooConfigError,
    apply_overrides,
    load_config_file,
    parse_overrides,
    parse_yaml,
    select_entry,
    validate_hyperparams,
)
from sb3_fedpg.zoo.train import train


def validate(text, algo_class=FederatedPG):
    return validate_hyperparams(parse_yaml(text), algo_class, "test.yml [X]")


@pytest.mark.parametrize("algo", ZOO_ALGOS)
def test_shipped_configs_are_valid(algo):
    content = load_config_file(default_config_file(algo))
    assert "default" in content and "sb3_fedpg/HeteroCartPole-v0" in content
    for env_id, entry in content.items():
        hyperparams = validate_hyperparams(entry, get_algo_class(algo), f"{algo}.yml [{env_id}]")
        assert hyperparams.n_timesteps >= 1


def test_floats_schedules_and_classes():
    hp = validate(
        "{n_timesteps: !!float 1e5, n_agents: 4, n_envs: 16, learning_rate: lin_0.1, gamma: 9.9e-1,"
        " policy_kwargs: {net_arch: [16], activation_fn: nn.Tanh}, local_steps: 3}"
    )
    assert hp.n_timesteps == 100_000 and hp.n_agents == 4 and hp.n_envs_per_agent == 4
    assert hp.model_kwargs["gamma"] == 0.99  # plain 9.9e-1 is a float too (YAML 1.1 alone reads a string)
    schedule = hp.model_kwargs["learning_rate"]
    assert isinstance(schedule, LinearSchedule)
    assert schedule(1.0) == pytest.approx(0.1) and schedule(0.5) == pytest.approx(0.05)
    assert pickle.loads(pickle.dumps(schedule))(0.5) == pytest.approx(0.05)  # picklable, saved with the model
    assert hp.model_kwargs["policy_kwargs"] == {"net_arch": [16], "activation_fn": th.nn.Tanh}
    ppo = validate(
        "{n_timesteps: 1e5, clip_range: lin_0.2, clip_range_vf: null,"
        " policy_kwargs: {optimizer_class: RMSpropTFLike, net_arch: {pi: [8], vf: [8]}}}",
        PPO,
    )
    assert isinstance(ppo.model_kwargs["clip_range"], LinearSchedule) and ppo.model_kwargs["clip_range_vf"] is None
    assert ppo.model_kwargs["policy_kwargs"]["optimizer_class"].__name__ == "RMSpropTFLike"
    assert validate("{n_timesteps: 10}", A2C).n_envs_per_agent == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{n_timesteps: 1e5, lerning_rate: 0.1}", r"unknown key 'lerning_rate' .*did you mean 'learning_rate'"),
        ("{n_timesteps: 1e5, device: cpu}", r"unknown key 'device'"),
        ("{local_steps: 2}", r"'n_timesteps' is missing"),
        ("{n_timesteps: 0}", r"bad value 0 for 'n_timesteps'"),
        ("{n_timesteps: 1e5, local_steps: 2.5}", r"bad value 2.5 for 'local_steps': expected int"),
        ("{n_timesteps: 1e5, correction: maybe}", r"bad value 'maybe' for 'correction': expected bool"),
        ("{n_timesteps: 1e5, learning_rate: lin_fast}", r"bad value 'lin_fast' for 'learning_rate'"),
        ("{n_timesteps: 1e5, gamma: lin_0.9}", r"'gamma' takes no schedule"),
        ("{n_timesteps: 1e5, policy: CnnLstmPolicy}", r"bad value 'CnnLstmPolicy' for 'policy'"),
        ("{n_timesteps: 1e5, policy_kwargs: 'dict(net_arch=[8])'}", r"'policy_kwargs' must be a mapping"),
        ("{n_timesteps: 1e5, policy_kwargs: {net_arc: [8]}}", r"unknown key 'policy_kwargs.net_arc'"),
        (
            "{n_timesteps: 1e5, policy_kwargs: {activation_fn: os.system}}",
            r"bad value 'os.system' for 'policy_kwargs.activation_fn'",
        ),
        ("{n_timesteps: 1e5, n_agents: 3, n_envs: 8}", r"bad value 8 for 'n_envs': not a multiple of n_agents=3"),
        ("{n_timesteps: 1e5, n_envs: 8, n_envs_per_agent: 2}", r"give 'n_envs' .* or 'n_envs_per_agent', not both"),
        ("{n_timesteps: 1e5, env_kwargs: [1]}", r"'env_kwargs' must be a mapping"),
        ("{n_timesteps: 1e5, gamma: !!python/name:os.system ''}", r"not valid YAML"),
    ],
)
def test_bad_keys_and_values_name_the_key(text, message):
    with pytest.raises(ZooConfigError, match=message):
        validate(text)


def test_file_entries_and_overrides(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("default:\n  n_timesteps: 10\nCartPole-v1:\n  n_timesteps: 20\n  env_kwargs: {a: 1, b: 2}\n")
    content = load_config_file(path)
    assert select_entry(content, "CartPole-v1")["n_timesteps"] == 20
    assert select_entry(content, "Pendulum-v1")["n_timesteps"] == 10  # no merging, as rl-zoo
    overrides = parse_overrides(["n_timesteps:1e3", "env_kwargs.b:3", "policy_kwargs:{net_arch: [8]}", "x:lin_0.1"])
    assert overrides == {"n_timesteps": 1000.0, "env_kwargs": {"b": 3}, "policy_kwargs": {"net_arch": [8]}, "x": "lin_0.1"}
    merged = apply_overrides(select_entry(content, "CartPole-v1"), overrides)
    assert merged["env_kwargs"] == {"a": 1, "b": 3}
    with pytest.raises(ZooConfigError, match="expected key:value"):
        parse_overrides(["learning_rate"])
    path.write_text("default: 3\n")
    with pytest.raises(ZooConfigError, match="the entry 'default' must be a mapping"):
        load_config_file(path)
    with pytest.raises(ZooConfigError, match="no entry for 'X' and no 'default'"):
        select_entry({"A": {}}, "X")
    with pytest.raises(ZooConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.yml")


def test_alias_bomb_is_refused_fast_before_anything_is_built(tmp_path, alias_bomb):
    # ~500 bytes, 9**9 strings when expanded: it cost 27 s and 1.6 GB while an error message was built.
    path = tmp_path / "bomb.yml"
    path.write_text(alias_bomb("default"))
    assert len(path.read_bytes()) < 600
    tracemalloc.start()
    with pytest.raises(ZooConfigError, match=r"bomb.yml: refused: its aliases expand to \d+ values .* at most 10000"):
        load_config_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6  # refused before expanding (expanded, it took 1.6 GB): memory, not time, so load cannot fail it
    # the same through the trainer: refused before any folder is made
    with pytest.raises(ZooConfigError, match="aliases may add at most 10000 values"):
        train(["--env", "CartPole-v1", "--conf-file", str(path), "-f", str(tmp_path / "logs")])
    assert not (tmp_path / "logs").exists()
    # and as an override value
    bomb_value = "{" + alias_bomb("x").split("env_kwargs:\n", 1)[1].replace("\n", ", ").replace("    ", "") + "}"
    with pytest.raises(ZooConfigError, match="override env_kwargs: refused"):
        parse_overrides([f"env_kwargs:{bomb_value}"])


def test_ordinary_anchors_and_merge_keys_still_work():
    content = parse_yaml(
        "base: &base {n_timesteps: 1000, n_agents: 2, n_envs: 4, policy_kwargs: &pk {net_arch: [16]}}\n"
        "CartPole-v1:\n  <<: *base\n  local_steps: 3\n  policy_kwargs: *pk\n"
    )
    expected = {"n_timesteps": 1000, "n_agents": 2, "n_envs": 4, "policy_kwargs": {"net_arch": [16]}, "local_steps": 3}
    assert content["CartPole-v1"] == expected
    validate_hyperparams(content["CartPole-v1"], FederatedPG)


@pytest.mark.parametrize(
    "text, message",
    [
        ("&a [*a]", "refused: an alias refers to a node that contains it"),
        ("a: &a {b: *a}", "refused: an alias refers to a node that contains it"),
        ("[" * 20000 + "]" * 20000, "nested too deeply|nested more than"),
    ],
)
def test_cycles_and_deep_nesting_are_refused(text, message):
    with pytest.raises(ZooConfigError, match=message):
        parse_yaml(text)


@pytest.mark.parametrize(
    "value, cls",
    [
        ("tanh", th.nn.Tanh),
        ("ReLU", th.nn.ReLU),
        ("nn.Tanh", th.nn.Tanh),
        ("th.nn.ELU", th.nn.ELU),
        ("torch.nn.SiLU", th.nn.SiLU),
    ],
)
def test_activation_names(value, cls):
    assert validate(f"{{n_timesteps: 10, policy_kwargs: {{activation_fn: {value}}}}}").model_kwargs["policy_kwargs"] == {
        "activation_fn": cls
    }


@pytest.mark.parametrize("value", ["evil.tanh", "os.path.relu", "builtins.print", "__import__", "''"])
def test_class_names_with_other_modules_are_refused(value):
    with pytest.raises(ZooConfigError, match=r"for 'policy_kwargs\.activation_fn': use one of"):
        validate(f"{{n_timesteps: 10, policy_kwargs: {{activation_fn: {value}}}}}")

import os
import subprocess
import sys
import tracemalloc
import types

import pytest
import torch as th
import yaml

pytest.importorskip("rl_zoo3")

from sb3_fedpg.zoo.config import ZooConfigError
from sb3_fedpg.zoo.rl_zoo3_entry import _with_default_config, read_hyperparameters, safe_hyperparams


def test_default_config_for_the_federated_algorithms_only():
    assert _with_default_config(["--algo", "fedpg"])[-2] == "--conf-file"
    assert _with_default_config(["--algo=fedpg"])[-1].endswith("zoo_configs/fedpg.yml")
    assert _with_default_config(["--algo", "fedppo"])[-1].endswith("zoo_configs/fedppo.yml")
    assert _with_default_config(["--algo", "fedsvrpgm"])[-1].endswith("zoo_configs/fedsvrpgm.yml")
    assert _with_default_config(["--algo", "feda2c"])[-1].endswith("zoo_configs/feda2c.yml")
    assert _with_default_config(["--algo", "fedpg", "--conf-file", "x.yml"]) == ["--algo", "fedpg", "--conf-file", "x.yml"]
    assert _with_default_config(["--algo", "ppo"]) == ["--algo", "ppo"]


TINY = {
    "fedppo": "  n_steps: 32\n  batch_size: 32\n  n_epochs: 2\n",
    "fedsvrpgm": "  n_steps: 16\n  local_steps: 2\n",
    "feda2c": "  n_steps: 8\n  local_steps: 2\n  rms_prop_eps: 1.0e-4\n",
}


@pytest.mark.parametrize("algo", list(TINY))
def test_rl_zoo3_registers_every_federated_algorithm(tmp_path, algo):
    from sb3_fedpg.zoo import get_algo_class

    conf = tmp_path / f"{algo}.yml"
    conf.write_text(
        "CartPole-v1:\n  n_timesteps: !!float 5e2\n  policy: MlpPolicy\n  n_agents: 2\n  n_envs: 4\n"
        + TINY[algo]
        + "  policy_kwargs:\n    net_arch: [16]\n    activation_fn: relu\n"
    )
    command = [sys.executable, "-m", "sb3_fedpg.zoo.rl_zoo3_entry", "--algo", algo, "--env", "CartPole-v1"]
    command += ["--conf-file", str(conf), "-f", str(tmp_path / "logs"), "--seed", "0", "--num-threads", "1"]
    command += ["--eval-freq", "-1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    model = get_algo_class(algo).load(tmp_path / "logs" / algo / "CartPole-v1_1" / "CartPole-v1.zip")
    assert model.n_agents == 2 and model.num_timesteps >= 500
    assert model.policy.activation_fn is th.nn.ReLU


def test_rl_zoo3_trains_fedpg(tmp_path):
    conf = tmp_path / "fedpg.yml"
    conf.write_text(
        "CartPole-v1:\n  n_timesteps: !!float 5e2\n  policy: MlpPolicy\n  n_agents: 2\n  n_envs: 4\n"
        "  n_steps: 16\n  local_steps: 2\n  learning_rate: lin_0.1\n  policy_kwargs:\n    net_arch: [16]\n"
        "    activation_fn: tanh\n"  # was "'str' object is not callable": rl_zoo3 passed the name on
    )
    # A subprocess: importing rl_zoo3 patches Gymnasium's TimeLimit for the whole process.
    command = [sys.executable, "-m", "sb3_fedpg.zoo.rl_zoo3_entry", "--algo", "fedpg", "--env", "CartPole-v1"]
    command += [
        "--conf-file",
        str(conf),
        "-f",
        str(tmp_path / "logs"),
        "--seed",
        "0",
        "--num-threads",
        "1",
        "--eval-freq",
        "-1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = tmp_path / "logs" / "fedpg" / "CartPole-v1_1"
    assert (run / "CartPole-v1.zip").is_file()
    for file in ("config.yml", "args.yml", "command.txt"):
        assert (run / "CartPole-v1" / file).is_file(), file
    assert "fed/" in done.stdout  # FederatedPG's federated metrics in rl_zoo3's stdout log

    from sb3_fedpg import FederatedPG

    model = FederatedPG.load(run / "CartPole-v1.zip")
    assert model.n_agents == 2 and model.num_timesteps >= 500
    assert model.policy.activation_fn is th.nn.Tanh
    # config.yml holds the values as written, as plain YAML
    saved = yaml.safe_load((run / "CartPole-v1" / "config.yml").read_text())
    assert saved["policy_kwargs"] == {"net_arch": [16], "activation_fn": "tanh"}


def _rl_zoo3(tmp_path, conf_text):
    conf = tmp_path / "fedpg.yml"
    conf.write_text(conf_text)
    command = [sys.executable, "-m", "sb3_fedpg.zoo.rl_zoo3_entry", "--algo", "fedpg", "--env", "CartPole-v1"]
    command += ["--conf-file", str(conf), "-f", str(tmp_path / "logs"), "--seed", "0", "--eval-freq", "-1"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)


def test_rl_zoo3_path_evaluates_nothing(tmp_path):
    # rl_zoo3 would eval this string: the payload would create the file PWNED.
    payload = "dict(net_arch=[__import__('pathlib').Path('PWNED').touch() or 8])"
    done = _rl_zoo3(tmp_path, f'CartPole-v1:\n  n_timesteps: 500\n  policy: MlpPolicy\n  policy_kwargs: "{payload}"\n')
    assert done.returncode != 0
    assert "'policy_kwargs' is the string" in done.stderr and "would evaluate as Python" in done.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "logs").exists()


def _manager(config, env_id="CartPole-v1", custom=None):
    # What read_hyperparameters uses of rl_zoo3's ExperimentManager.
    return types.SimpleNamespace(
        algo="fedpg",
        config=str(config),
        env_name=types.SimpleNamespace(gym_id=env_id),
        storage=None,
        study_name=None,
        trial_id=None,
        custom_hyperparams=custom,
        env_kwargs={},
        _eval_env_kwargs_args=None,
    )


def test_read_hyperparameters_refuses_an_alias_bomb_fast(tmp_path, alias_bomb):
    path = tmp_path / "bomb.yml"
    path.write_text(alias_bomb("CartPole-v1"))
    tracemalloc.start()
    with pytest.raises(ZooConfigError, match=r"aliases expand to .* aliases may add at most 10000 values"):
        read_hyperparameters(_manager(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6  # refused before expanding: memory, not time, so machine load cannot fail it


def test_read_hyperparameters_resolves_classes(tmp_path, capsys):
    path = tmp_path / "c.yml"
    path.write_text("default:\n  n_timesteps: 10\n  policy: MlpPolicy\n  policy_kwargs: {activation_fn: nn.ReLU}\n")
    hyperparams, saved = read_hyperparameters(_manager(path, custom={"learning_rate": 0.5}))
    assert hyperparams["policy_kwargs"] == {"activation_fn": th.nn.ReLU} and hyperparams["learning_rate"] == 0.5
    assert saved["policy_kwargs"] == {"activation_fn": "nn.ReLU"}  # written to config.yml as it was
    (tmp_path / "c.py").write_text("hyperparams = {}")
    with pytest.raises(ZooConfigError, match="YAML config files only"):
        read_hyperparameters(_manager(tmp_path / "c.py"))


@pytest.mark.parametrize(
    "name, cls",
    [("tanh", th.nn.Tanh), ("relu", th.nn.ReLU), ("nn.Tanh", th.nn.Tanh), ("torch.nn.ReLU", th.nn.ReLU), ("ELU", th.nn.ELU)],
)
def test_activation_names_map_to_classes(name, cls):
    out = safe_hyperparams({"policy": "MlpPolicy", "policy_kwargs": {"activation_fn": name}}, "x")
    assert out["policy_kwargs"]["activation_fn"] is cls
    # a class rl_zoo3 already made from -params (its own eval of the command line) passes if it is in the table
    assert safe_hyperparams({"policy_kwargs": {"activation_fn": cls}}, "x")["policy_kwargs"]["activation_fn"] is cls


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"policy_kwargs": "dict(net_arch=[8])"}, "'policy_kwargs' is the string .* would evaluate"),
        ({"normalize": "dict(norm_obs=True)"}, "'normalize' is the string"),
        ({"monitor_kwargs": "{}"}, "'monitor_kwargs' is the string"),
        ({"env_wrapper": "gymnasium.wrappers.TimeLimit"}, "'env_wrapper' names classes that rl_zoo3 would import"),
        ({"callback": {"subprocess.Popen": {"args": "true"}}}, "'callback' names classes"),
        ({"policy": "os.system"}, "bad value 'os.system' for 'policy'"),
        ({"policy_kwargs": {"activation_fn": "os.system"}}, "bad value 'os.system' for 'policy_kwargs.activation_fn'"),
        ({"policy_kwargs": {"activation_fn": "evil.tanh"}}, "bad value 'evil.tanh'"),
        ({"policy_kwargs": {"activation_fn": print}}, "bad value <built-in function print>"),
        ({"policy_kwargs": {"net_arc": [8]}}, "unknown key 'policy_kwargs.net_arc'"),
    ],
)
def test_what_rl_zoo3_would_evaluate_or_import_is_refused(entry, message):
    with pytest.raises(ZooConfigError, match=message):
        safe_hyperparams({"policy": "MlpPolicy", **entry}, "c.yml [CartPole-v1]")

import os
import subprocess
import sys

import pytest

pytest.importorskip("rl_zoo3")

from sb3_fedpg.zoo.rl_zoo3_entry import _with_default_config


def test_default_config_for_fedpg_only():
    assert _with_default_config(["--algo", "fedpg"])[-2] == "--conf-file"
    assert _with_default_config(["--algo=fedpg"])[-1].endswith("zoo_configs/fedpg.yml")
    assert _with_default_config(["--algo", "fedpg", "--conf-file", "x.yml"]) == ["--algo", "fedpg", "--conf-file", "x.yml"]
    assert _with_default_config(["--algo", "ppo"]) == ["--algo", "ppo"]


def test_rl_zoo3_trains_fedpg(tmp_path):
    conf = tmp_path / "fedpg.yml"
    conf.write_text(
        "CartPole-v1:\n  n_timesteps: !!float 5e2\n  policy: MlpPolicy\n  n_agents: 2\n  n_envs: 4\n"
        "  n_steps: 16\n  local_steps: 2\n  learning_rate: lin_0.1\n  policy_kwargs:\n    net_arch: [16]\n"
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

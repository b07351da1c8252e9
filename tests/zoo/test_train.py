import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import yaml

from sb3_fedpg import FederatedPG
from sb3_fedpg.zoo import default_config_file
from sb3_fedpg.zoo.config import ZooConfigError
from sb3_fedpg.zoo.enjoy import enjoy
from sb3_fedpg.zoo.enjoy import main as enjoy_main
from sb3_fedpg.zoo.train import main, train

FAMILY = "sb3_fedpg/HeteroCartPole-v0"
TINY = ["policy_kwargs:{net_arch: [16]}", "n_agents:2", "n_envs:4"]


def run_train(tmp_path, algo="fedpg", extra=(), n=400):
    argv = ["--algo", algo, "--env", FAMILY, "--conf-file", str(default_config_file(algo)), "-n", str(n), "--seed", "3"]
    return train([*argv, "-f", str(tmp_path / "logs"), "--num-threads", "1", "--verbose", "0", *extra])


def test_fedpg_run_folder_and_enjoy(tmp_path, capsys):
    run = run_train(tmp_path, extra=["-params", *TINY, "local_steps:2", "env_kwargs.heterogeneity:0.5"])
    # rl-zoo layout: logs/<algo>/<env name>_<run id>/ with the model, the logs and <env name>/{config,args,command}
    assert run == tmp_path / "logs" / "fedpg" / "sb3_fedpg-HeteroCartPole-v0_1"
    name = "sb3_fedpg-HeteroCartPole-v0"
    for file in (f"{name}.zip", "progress.csv", f"{name}/config.yml", f"{name}/args.yml", f"{name}/command.txt"):
        assert (run / file).is_file(), file
    assert list(run.glob("events.out.tfevents.*"))  # TensorBoard
    config = yaml.safe_load((run / name / "config.yml").read_text())
    assert config["env_kwargs"] == {"heterogeneity": 0.5} and config["local_steps"] == 2 and config["n_timesteps"] == 400
    args = yaml.safe_load((run / name / "args.yml").read_text())
    assert args["seed"] == 3 and args["algo"] == "fedpg"
    assert "sb3_fedpg.zoo.train" in (run / name / "command.txt").read_text()
    model = FederatedPG.load(run / f"{name}.zip")
    assert model.n_agents == 2 and model.local_steps == 2 and model.num_timesteps >= 400

    capsys.readouterr()
    result = enjoy(["--algo", "fedpg", "--env", FAMILY, "-f", str(tmp_path / "logs"), "--n-episodes", "2"])
    out = capsys.readouterr().out
    assert "agent   0" in out and "agent   1" in out and "global objective" in out
    assert len(result["per_agent"]) == 2 and result["global_return"] == pytest.approx(np.mean(result["per_agent"]))

    # A second run gets the next id; enjoy takes the latest unless --exp-id says otherwise.
    assert run_train(tmp_path, extra=["-params", *TINY]).name.endswith("_2")
    assert enjoy(["--env", FAMILY, "-f", str(tmp_path / "logs"), "--exp-id", "1", "--n-episodes", "1"])["run"] == str(run)


@pytest.mark.parametrize("algo", ["a2c", "ppo"])
def test_central_baselines_train_on_the_pooled_federation(tmp_path, algo):
    extra = ["-params", *TINY, *(["n_steps:64", "batch_size:64", "n_epochs:1"] if algo == "ppo" else [])]
    run = run_train(tmp_path, algo, extra=extra, n=300)
    result = enjoy(["--algo", algo, "--env", FAMILY, "-f", str(tmp_path / "logs"), "--n-episodes", "1"])
    assert run.name == "sb3_fedpg-HeteroCartPole-v0_1" and len(result["per_agent"]) == 2


def test_track_logs_to_offline_wandb(tmp_path):
    from sb3_fedpg.common.wandb_logger import read_offline_history

    run = run_train(tmp_path, extra=["--track", "--wandb-project-name", "sb3-fedpg-tests", "-params", *TINY], n=600)
    keys = set().union(*read_offline_history(run))
    assert "rollout/ep_rew_mean" in keys and "fed/agent_1/ep_rew_mean" in keys and "fed/drift" in keys


def test_bad_config_is_an_error_naming_the_key_and_makes_no_folder(tmp_path):
    with pytest.raises(ZooConfigError, match="unknown key 'local_step'"):
        run_train(tmp_path, extra=["-params", "local_step:3"])
    with pytest.raises(ZooConfigError, match="bad value 'many' for 'local_steps'"):
        run_train(tmp_path, extra=["-params", "local_steps:many"])
    assert not (tmp_path / "logs").exists()
    with pytest.raises(FileNotFoundError, match="no trained fedpg model"):
        enjoy(["--env", FAMILY, "-f", str(tmp_path / "logs")])


def test_main_exits_with_the_config_error(tmp_path, monkeypatch):
    argv = ["train", "--env", FAMILY, "-f", str(tmp_path), "-params", "gamma:high"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"error: .*bad value 'high' for 'gamma'"):
        main()


def test_command_line(tmp_path, monkeypatch, capsys):
    conf = tmp_path / "tiny.yml"
    conf.write_text("default:\n  n_timesteps: !!float 3e2\n  n_agents: 2\n  n_envs: 4\n  policy_kwargs: {net_arch: [16]}\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, "-m", "sb3_fedpg.zoo.train", "--env", FAMILY, "--conf-file", str(conf), "-f", str(tmp_path)]
    done = subprocess.run(
        [*base, "--num-threads", "1", "--verbose", "0"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Saved" not in done.stdout  # --verbose 0
    # enjoy's command-line entry point, in-process (one interpreter start per test is enough)
    monkeypatch.setattr(sys, "argv", ["enjoy", "--env", FAMILY, "-f", str(tmp_path), "--n-episodes", "1"])
    enjoy_main()
    assert "agent   1" in capsys.readouterr().out


def test_checkpoints_and_resume_from_the_command_line(tmp_path):
    tiny = ["-params", *TINY, "local_steps:2", "n_steps:8"]
    full = run_train(tmp_path / "a", extra=[*tiny, "--save-freq-rounds", "2"], n=800)
    checkpoints = sorted((full / "checkpoints").glob("fedpg_*_rounds.zip"), key=lambda p: int(p.name.split("_")[1]))
    assert len(checkpoints) >= 2
    # Resume from an early checkpoint up to the same budget: the final policy is the uninterrupted one.
    resumed = run_train(tmp_path / "b", extra=[*tiny, "--resume", str(checkpoints[0])], n=800)
    name = "sb3_fedpg-HeteroCartPole-v0"
    a = FederatedPG.load(full / f"{name}.zip").get_global_parameters()
    b = FederatedPG.load(resumed / f"{name}.zip").get_global_parameters()
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_resume_errors(tmp_path):
    with pytest.raises(SystemExit):
        run_train(tmp_path, algo="a2c", extra=["--resume", str(tmp_path / "x.zip")])
    with pytest.raises(SystemExit):
        run_train(tmp_path, extra=["--resume", str(tmp_path / "missing.zip")])


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(pathlib.Path(folder).rglob("*")) if p.is_file()}


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys):
    # The case: a Pendulum checkpoint resumed as a CartPole run exited 0 and wrote a Pendulum model
    # into the CartPole run folder.
    tiny = ["-params", "policy_kwargs:{net_arch: [8]}", "n_agents:2", "n_envs:4", "local_steps:1", "n_steps:8"]
    common = ["--conf-file", str(default_config_file("fedpg")), "--seed", "1", "--num-threads", "1", "--verbose", "0"]
    first = ["--env", "Pendulum-v1", "-n", "64", "-f", str(tmp_path / "p"), *common, *tiny, "--save-freq-rounds", "1"]
    pendulum = train(first)
    checkpoint = sorted((pendulum / "checkpoints").glob("*.zip"))[0]
    logs = tmp_path / "logs"
    (logs / "fedpg" / "CartPole-v1_1").mkdir(parents=True)  # an earlier CartPole run
    before = _snapshot(tmp_path)

    def resume(env, *extra):
        with pytest.raises(SystemExit) as exit_info:
            train(["--env", env, "-n", "128", "-f", str(logs), *common, *tiny, *extra, "--resume", str(checkpoint)])
        assert exit_info.value.code != 0
        return capsys.readouterr().err

    err = resume("CartPole-v1")
    assert "checkpoint of env 'Pendulum-v1', not of 'CartPole-v1'" in err and "--env Pendulum-v1" in err
    # same env, other agents / sub-envs / env parameters: another run too
    assert "trained with n_agents=2, but this config gives n_agents=4" in resume("Pendulum-v1", "n_agents:4")
    assert "n_envs_per_agent=2, but this config gives n_envs_per_agent=1" in resume("Pendulum-v1", "n_envs:2")
    assert "trained with env_kwargs {}, but this config gives {'g': 9.0}" in resume("Pendulum-v1", "env_kwargs:{g: 9.0}")
    assert _snapshot(tmp_path) == before  # no folder made, no file written, the checkpoint untouched
    # the right run resumes
    assert train(["--env", "Pendulum-v1", "-n", "128", "-f", str(logs), *common, *tiny, "--resume", str(checkpoint)]).is_dir()


def test_resume_refuses_an_unlabelled_checkpoint_of_another_env(tmp_path, capsys):
    # A checkpoint written by user code (no zoo_run record, no run folder): the restored env's spaces are compared.
    from sb3_fedpg import make_federated_vec_env

    env = make_federated_vec_env("Pendulum-v1", n_agents=2, n_envs_per_agent=2, seed=0)
    model = FederatedPG("MlpPolicy", env, n_steps=8, local_steps=1, policy_kwargs={"net_arch": [8]})
    model.save_checkpoint(tmp_path / "ckpt.zip")
    env.close()
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_train(tmp_path, extra=["-params", *TINY, "--resume", str(tmp_path / "ckpt.zip")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "observation_space Box" in err and "'sb3_fedpg/HeteroCartPole-v0'" in err and "another env" in err
    assert _snapshot(tmp_path) == before


def test_fedppo_zoo_run(tmp_path):
    from sb3_fedpg import FederatedPPO

    run = run_train(tmp_path, algo="fedppo", extra=["-params", "n_agents:2", "n_envs:4", "n_steps:16", "n_epochs:2"], n=128)
    model = FederatedPPO.load(run / "sb3_fedpg-HeteroCartPole-v0.zip")
    assert model.n_agents == 2 and model.n_epochs == 2 and model.num_timesteps >= 128
    with pytest.raises(ZooConfigError, match="batch_size"):
        run_train(tmp_path, algo="fedppo", extra=["-params", "batch_size:0"], n=128)


def test_command_line_tools_default_to_one_torch_thread():
    from sb3_fedpg.zoo import enjoy
    from sb3_fedpg.zoo import train as train_module

    assert train_module.build_parser().parse_args(["--algo", "fedpg", "--env", "CartPole-v1"]).num_threads == 1
    assert enjoy.build_parser().parse_args(["--algo", "fedpg", "--env", "CartPole-v1"]).num_threads == 1


def test_feda2c_zoo_run(tmp_path):
    import torch as th

    from sb3_fedpg import FederatedA2C

    params = ["-params", "n_agents:2", "n_envs:4", "local_steps:2", "rms_prop_eps:0.001"]
    run = run_train(tmp_path, algo="feda2c", extra=params, n=128)
    model = FederatedA2C.load(run / "sb3_fedpg-HeteroCartPole-v0.zip")
    optimizer = model.local_optimizer_state.optimizer
    assert model.n_agents == 2 and model.n_steps == 5 and type(optimizer) is th.optim.RMSprop
    assert optimizer.defaults["eps"] == 0.001 and model.num_timesteps >= 128
    with pytest.raises(ZooConfigError, match="rms_prop_eps"):
        run_train(tmp_path, algo="feda2c", extra=["-params", "rms_prop_eps:-1.0"], n=128)


def test_fedsvrpgm_zoo_run(tmp_path):
    from sb3_fedpg import FederatedSVRPGM

    params = ["-params", "n_agents:2", "n_envs:4", "n_steps:16", "local_steps:2"]
    run = run_train(tmp_path, algo="fedsvrpgm", extra=params, n=128)
    model = FederatedSVRPGM.load(run / "sb3_fedpg-HeteroCartPole-v0.zip")
    assert model.n_agents == 2 and model.local_steps == 2 and model.num_timesteps >= 128 and model.momentum is not None
    with pytest.raises(ZooConfigError, match="momentum_coef"):
        run_train(tmp_path, algo="fedsvrpgm", extra=["-params", "momentum_coef:0"], n=128)


@pytest.mark.parametrize("algo", ["fedpg", "ppo"])
def test_normalize_saves_the_statistics_and_enjoy_loads_them(tmp_path, algo):
    # `normalize` (true or a mapping, never a string) wraps the env: FederatedVecNormalize for a federated algorithm
    # (per-agent statistics merged every round), SB3's VecNormalize for the central references; the statistics are
    # saved as <run>/<env name>/vecnormalize.pkl and enjoy evaluates with them, fixed.
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_fedpg.common.vec_normalize import FederatedVecNormalize

    extra = [
        "-params",
        *TINY,
        "normalize:{clip_obs: 5.0}",
        *(["n_steps:64", "batch_size:64", "n_epochs:1"] if algo == "ppo" else []),
    ]
    run = run_train(tmp_path, algo, extra=extra, n=300)
    name = "sb3_fedpg-HeteroCartPole-v0"
    stats = VecNormalize.load(str(run / name / "vecnormalize.pkl"), make_env_for_stats())
    assert isinstance(stats, FederatedVecNormalize) == (algo == "fedpg")
    assert stats.clip_obs == 5.0 and not stats.norm_reward and stats.obs_rms.count > 300
    result = enjoy(["--algo", algo, "--env", FAMILY, "-f", str(tmp_path / "logs"), "--n-episodes", "1"])
    assert len(result["per_agent"]) == 2


def make_env_for_stats():
    from sb3_fedpg import make_federated_vec_env

    return make_federated_vec_env(FAMILY, n_agents=2, n_envs_per_agent=1)


def test_normalize_is_checked(tmp_path):
    for value, message in (
        ("normalize:{norm_reward: true}", "does not normalise rewards"),
        ("normalize:{clip: 5}", "unknown key 'normalize.clip' for FederatedVecNormalize"),
        ("normalize:dict(norm_obs=True)", "'normalize' must be true, false or a mapping"),
    ):
        with pytest.raises(ZooConfigError, match=message):
            run_train(tmp_path, extra=["-params", *TINY, value])
    assert not (tmp_path / "logs").exists()

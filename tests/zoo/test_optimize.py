import csv
import os
import pickle
import subprocess
import sys

import numpy as np
import optuna
import pytest

from sb3_fedpg import make_federated_vec_env
from sb3_fedpg.zoo import ZOO_ALGOS, default_config_file, get_algo_class
from sb3_fedpg.zoo.config import ZooConfigError, load_config_file, parse_yaml, select_entry, validate_hyperparams
from sb3_fedpg.zoo.hyperparams_opt import SAMPLERS, apply_sampled, sampled_hyperparams
from sb3_fedpg.zoo.optimize import Objective, trial_counts
from sb3_fedpg.zoo.train import train

ENV = "sb3_fedpg/HeteroCartPole-v0"
TINY = f"{ENV}:\n  n_timesteps: 4096\n  policy: MlpPolicy\n  n_agents: 2\n  n_envs: 4\n  env_kwargs:\n    heterogeneity: 1.0\n"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_study_writes_report_and_a_usable_entry(tmp_path):
    conf = tmp_path / "fedpg.yml"
    conf.write_text(TINY + "  n_steps: 16\n  local_steps: 2\n  learning_rate: 0.1\n")
    argv = ["--algo", "fedpg", "--env", ENV, "--conf-file", str(conf), "--optimize", "--n-trials", "3", "-n", "512"]
    argv += ["--n-evaluations", "2", "--eval-episodes", "1", "--n-startup-trials", "1", "--seed", "0", "-f", str(tmp_path)]
    best = train([*argv, "--verbose", "0"])
    assert best == tmp_path / "fedpg" / "best_hyperparameters.yml"
    (report,) = (tmp_path / "fedpg").glob("report_sb3_fedpg-HeteroCartPole-v0_3-trials-512-tpe-median_*.csv")
    rows = read_csv(report)
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert {row["state"] for row in rows} <= {"COMPLETE", "PRUNED"} and "COMPLETE" in {row["state"] for row in rows}
    assert "params_local_steps" in rows[0] and "intermediate_values" in rows[0]

    entry = select_entry(load_config_file(best), ENV)
    # the base entry with the sampled values applied; n_timesteps: the entry's full budget, not the trials' -n
    assert entry["n_timesteps"] == 4096 and entry["n_agents"] == 2 and entry["env_kwargs"] == {"heterogeneity": 1.0}
    assert "server_learning_rate" in entry and "net_arch" in entry["policy_kwargs"]
    run = train(
        ["--algo", "fedpg", "--env", ENV, "--conf-file", str(best), "-n", "256", "-f", str(tmp_path), "--verbose", "0"]
    )
    assert (run / "sb3_fedpg-HeteroCartPole-v0.zip").is_file()


def _objective(algo="fedpg", entry_extra="  n_steps: 8\n  local_steps: 1\n  learning_rate: 0.1\n", tmp_path=None):
    conf = tmp_path / f"{algo}.yml"
    conf.write_text(TINY + entry_extra)
    base = select_entry(load_config_file(conf), ENV)
    return Objective(algo, ENV, base, budget=256, n_evaluations=2, eval_episodes=1, seed=0, device="cpu")


def small_rounds(trial):
    # rounds of 8 steps x 4 envs: the 256-step trials pass their two evaluation points in different rounds
    return {"n_steps": 8, "local_steps": 1, "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.1)}


def test_the_median_pruner_prunes_a_clearly_worse_trial(tmp_path, monkeypatch):
    # A finished trial whose J̄ (10⁶) no CartPole policy reaches (at most 500 per episode): the next trial is below the
    # median at its first evaluation and must be pruned there.
    monkeypatch.setitem(SAMPLERS, "fedpg", small_rounds)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study.add_trial(optuna.trial.create_trial(value=1e6, params={}, distributions={}, intermediate_values={1: 1e6, 2: 1e6}))
    study.optimize(_objective(tmp_path=tmp_path), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped at its first evaluation
    assert trial_counts(study) == {"complete": 1, "pruned": 1, "failed": 0, "running": 0, "waiting": 0}


def test_diverged_and_invalid_trials_do_not_stop_the_study(tmp_path, monkeypatch):
    import sb3_fedpg.zoo.optimize as optimize_module

    monkeypatch.setitem(SAMPLERS, "fedpg", small_rounds)
    # a NaN return (a diverged policy): pruned
    monkeypatch.setattr(optimize_module, "evaluate_agents", lambda *args, **kwargs: np.array([np.nan, 1.0]))
    study = optuna.create_study(direction="maximize")
    study.optimize(_objective(tmp_path=tmp_path), n_trials=1)
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED
    assert study.trials[-1].user_attrs["diverged"].startswith("J = nan")

    # a training that raises FloatingPointError (a non-finite gradient): pruned, with the reason on record
    def diverge(self, *args, **kwargs):
        raise FloatingPointError("non-finite gradient")

    monkeypatch.setattr(get_algo_class("fedpg"), "learn", diverge)
    study.optimize(_objective(tmp_path=tmp_path), n_trials=1)
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED
    assert "non-finite" in study.trials[-1].user_attrs["diverged"]

    # a sampler that gives an invalid value: the trial fails (ZooConfigError), the study goes on
    monkeypatch.setitem(SAMPLERS, "fedpg", lambda trial: {"local_steps": trial.suggest_int("bad_local_steps", 0, 0)})
    study.optimize(_objective(tmp_path=tmp_path), n_trials=2, catch=(ZooConfigError,))
    assert trial_counts(study)["failed"] == 2
    # and so are values the config accepts but the algorithm's constructor refuses (a failed trial, not a divergence)
    refused = {"local_optimizer": "adam", "policy_kwargs": {"optimizer_class": "adam"}}  # two local rules at once
    monkeypatch.setitem(SAMPLERS, "fedpg", lambda trial: refused)
    study.optimize(_objective(tmp_path=tmp_path), n_trials=1, catch=(ZooConfigError,))
    assert trial_counts(study) == {"complete": 0, "pruned": 2, "failed": 3, "running": 0, "waiting": 0}


@pytest.mark.parametrize("algo", ZOO_ALGOS)
def test_every_sampled_set_validates(algo):
    algo_class = get_algo_class(algo)
    base = select_entry(load_config_file(default_config_file(algo)), ENV)
    # no closures: the samplers and the objective pickle (for process-based parallel studies)
    assert pickle.loads(pickle.dumps(SAMPLERS[algo])) is SAMPLERS[algo]
    assert pickle.loads(pickle.dumps(Objective(algo, ENV, base, 256, 1, 1, seed=0))).base_entry == base
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen = set()
    for i in range(60):
        trial = study.ask()
        sampled = SAMPLERS[algo](trial)
        hyperparams = validate_hyperparams(apply_sampled(base, sampled), algo_class, f"{algo} sample {i}")
        # the trial's parameters give back the same values (how the best entry is written)
        assert sampled_hyperparams(algo, trial.params) == sampled
        assert base["n_agents"] == hyperparams.n_agents and hyperparams.env_kwargs == base["env_kwargs"]
        if i < 8:  # and the algorithm accepts them (its own cross-checks), on a tiny federation
            env = make_federated_vec_env(ENV, n_agents=2, n_envs_per_agent=1, seed=0)
            algo_class(env=env, device="cpu", **hyperparams.model_kwargs)
            env.close()
        seen.update(f"{key}={value}" for key, value in sampled.items() if key in ("correction", "local_optimizer"))
        study.tell(trial, float(i))
    if algo == "fedpg":  # the federated knobs really vary
        assert {"correction=True", "correction=False", "local_optimizer=sgd", "local_optimizer=adam"} <= seen
    if algo == "fedppo":
        assert {"correction=surrogate", "correction=linear", "correction=False"} <= seen


def test_bad_optimize_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train(["--algo", "fedpg", "--env", ENV, "--optimize", "--n-trials", "0", "-f", str(tmp_path)])
    assert "--n-trials must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(["--algo", "fedpg", "--env", ENV, "--optimize", "--resume", "x.zip", "-f", str(tmp_path)])
    assert not (tmp_path / "fedpg").exists()


def test_a_shared_study_resumes_up_to_max_total_trials(tmp_path):
    conf = tmp_path / "fedpg.yml"
    conf.write_text(TINY + "  n_steps: 8\n  local_steps: 1\n  learning_rate: 0.1\n")
    storage = tmp_path / "study.log"  # a JournalStorage file, as in rl-zoo
    argv = ["--algo", "fedpg", "--env", ENV, "--conf-file", str(conf), "--optimize", "-n", "256", "--n-evaluations", "1"]
    argv += ["--eval-episodes", "1", "--storage", str(storage), "--study-name", "s", "--max-total-trials", "2"]
    argv += ["-f", str(tmp_path), "--verbose", "0", "--seed", "0"]
    train(argv)
    train(argv)  # the study has its 2 trials: nothing more runs
    study = optuna.load_study(
        study_name="s", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    )
    assert len(study.trials) == 2


def test_rl_zoo3_optimize_runs_our_samplers(tmp_path):
    pytest.importorskip("rl_zoo3")
    conf = tmp_path / "fedppo.yml"
    conf.write_text(
        "CartPole-v1:\n  n_timesteps: 512\n  policy: MlpPolicy\n  n_agents: 2\n  n_envs: 4\n  n_steps: 16\n"
        "  batch_size: 32\n  n_epochs: 1\n"
    )
    storage = tmp_path / "study.log"
    common = [sys.executable, "-m", "sb3_fedpg.zoo.rl_zoo3_entry", "--algo", "fedppo", "--env", "CartPole-v1"]
    common += ["--conf-file", str(conf), "--seed", "0", "--num-threads", "1", "--storage", str(storage), "--study-name", "s"]
    environ = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # A subprocess: importing rl_zoo3 patches Gymnasium's TimeLimit for the whole process.
    command = [*common, "-optimize", "--n-trials", "2", "--n-evaluations", "1", "--eval-episodes", "1", "--no-optim-plots"]
    done = subprocess.run([*command, "-f", str(tmp_path / "opt")], capture_output=True, text=True, timeout=300, env=environ)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert list((tmp_path / "opt" / "fedppo").glob("report_CartPole-v1_2-trials-512-tpe-median_*.csv"))
    # --trial-id 0 trains with that trial's values (rl_zoo3's own reader skips trial 0: `if self.trial_id`)
    command = [*common, "--trial-id", "0", "--eval-freq", "-1", "-f", str(tmp_path / "train")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environ)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    study = optuna.load_study(
        study_name="s", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    )
    config = parse_yaml((tmp_path / "train" / "fedppo" / "CartPole-v1_1" / "CartPole-v1" / "config.yml").read_text())
    assert config["n_epochs"] == sampled_hyperparams("fedppo", study.trials[0].params)["n_epochs"]
    assert "server_learning_rate" in config


@pytest.mark.parametrize("algo", ["a2c", "fedppo"])
def test_every_evaluation_point_is_reported(tmp_path, algo):
    # A2C is evaluated at the env step passing each point, the federated algorithms after the round passing it
    conf = tmp_path / f"{algo}.yml"
    conf.write_text(TINY)
    base = select_entry(load_config_file(conf), ENV)
    objective = Objective(algo, ENV, base, budget=1024, n_evaluations=3, eval_episodes=1, seed=0, device="cpu")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert list(trial.intermediate_values) == [1, 2, 3] and trial.value == trial.intermediate_values[3]
    assert len(trial.user_attrs["per_agent"]) == 2 and trial.user_attrs["seed"] == 0


@pytest.mark.parametrize(("n_evaluations", "first_prunable"), [(1, 1), (2, 1), (3, 2), (5, 2), (6, 3), (9, 4)])
def test_the_first_third_of_the_evaluations_is_never_pruned(n_evaluations, first_prunable):
    from sb3_fedpg.zoo.optimize import create_pruner

    study = optuna.create_study(direction="maximize", pruner=create_pruner("median", 1, n_evaluations))
    steps = range(1, n_evaluations + 1)
    study.add_trial(
        optuna.trial.create_trial(value=1e6, params={}, distributions={}, intermediate_values=dict.fromkeys(steps, 1e6))
    )
    trial = study.ask()
    pruned_at = None
    for step in steps:
        trial.report(0.0, step)
        if trial.should_prune():
            pruned_at = step
            break
    assert pruned_at == first_prunable
    assert create_pruner("none", 1, n_evaluations).prune(study, study.trials[-1]) is False

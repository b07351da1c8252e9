"""
Hyperparameter optimisation with Optuna: ``python -m sb3_fedpg.zoo.train --optimize`` (rl-zoo's ``-optimize``).

.. code-block:: bash

    python -m sb3_fedpg.zoo.train --algo fedpg --env sb3_fedpg/HeteroCartPole-v0 --optimize \\
        --n-trials 20 -n 100000 --n-evaluations 5 --eval-episodes 5 --sampler tpe --pruner median -f logs

Each trial samples hyperparameters (:mod:`sb3_fedpg.zoo.hyperparams_opt`), applies them to the config entry of the
env, validates the result as any config (:func:`~sb3_fedpg.zoo.config.validate_hyperparams`), trains for the
per-trial budget ``-n`` (default: the entry's ``n_timesteps``) and is scored by the evaluation objective
``J̄ = mean over agents of each agent's return under its own reward``
(:func:`~sb3_fedpg.common.evaluation.evaluate_agents`). ``J̄`` is measured ``--n-evaluations`` times during the trial,
after the round that passes each ``k/n`` of the budget, and reported to Optuna, whose pruner (median by default)
stops trials below the median of earlier ones. A trial whose training diverges (a non-finite gradient, NaN actions)
or whose ``J̄`` is not finite is pruned; one whose sampled values do not validate is marked failed. Neither stops the
study.

Written to ``<log folder>/<algo>/``: the study's trials as ``report_<env>_<n>-trials-<budget>-<sampler>-<pruner>_<time>.csv``
(rl-zoo's name) and ``best_hyperparameters.yml``, a config file with one entry per tuned env id: the base entry with
the best trial's values applied and ``n_timesteps`` the base entry's full budget, usable as is with ``--conf-file``
(entries of other env ids already in the file are kept).
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from sb3_fedpg.common.callbacks import RoundCallback
from sb3_fedpg.common.evaluation import evaluate_agents

if TYPE_CHECKING:
    import optuna

    from sb3_fedpg.common.federated_vec_env import FederatedVecEnv

#: Errors of a diverged training (rl-zoo prunes on AssertionError and ValueError: torch's distributions refuse NaN
#: parameters with a ValueError; the federated algorithms raise FloatingPointError on a non-finite gradient).
DIVERGED = (FloatingPointError, ValueError, AssertionError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    Add the optimisation options to the trainer's parser (rl-zoo's names and defaults, except ``--n-startup-trials``
    and ``--n-evaluations``, see their help).

    :param parser: the ``sb3_fedpg.zoo.train`` parser
    """
    group = parser.add_argument_group("hyperparameter optimisation (Optuna)")
    group.add_argument(
        "-optimize", "--optimize-hyperparameters", "--optimize", dest="optimize", action="store_true", help="run a study"
    )
    group.add_argument("--n-trials", type=int, default=500, help="trials of this process (rl-zoo's default: 500)")
    group.add_argument(
        "--max-total-trials",
        type=int,
        default=None,
        help="stop once the study (all processes sharing --storage) has this many trials (complete, pruned or running)",
    )
    group.add_argument("--n-jobs", type=int, default=1, help="trials run in parallel threads")
    group.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler")
    group.add_argument("--pruner", choices=("median", "none"), default="median", help="Optuna pruner")
    group.add_argument(
        "--n-startup-trials",
        type=int,
        default=10,
        help="trials sampled at random before TPE, and completed before the median pruner prunes",
    )
    group.add_argument(
        "--n-evaluations", type=int, default=None, help="evaluations per trial, for pruning (default: one per 1e5 steps)"
    )
    # --eval-episodes (episodes per agent in each evaluation) is the trainer's own option, shared with --eval-freq
    group.add_argument(
        "--storage",
        default=None,
        help="shared study storage: an SQLAlchemy URL (sqlite:///study.db) or a JournalStorage file (study.log)",
    )
    group.add_argument("--study-name", default=None, help="study name (the same name and storage resume or share a study)")


def _storage(storage: str | None) -> Any:
    if storage is None or not storage.endswith(".log"):
        return storage
    import optuna
    from optuna.storages.journal import JournalFileBackend

    pathlib.Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def create_sampler(name: str, n_startup_trials: int, seed: int | None) -> optuna.samplers.BaseSampler:
    """
    :param name: ``tpe`` or ``random``
    :param n_startup_trials: random trials before TPE
    :param seed: the sampler's seed
    :return: the sampler (rl-zoo's: multivariate TPE)
    """
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True)
    raise ValueError(f"unknown sampler {name!r}: tpe or random")


def create_pruner(name: str, n_startup_trials: int, n_evaluations: int) -> optuna.pruners.BasePruner:
    """
    :param name: ``median`` or ``none``
    :param n_startup_trials: completed trials before the median pruner prunes
    :param n_evaluations: evaluations per trial (the first third, rounded down, is never pruned)
    :return: the pruner
    """
    import optuna

    if name == "median":
        # rl-zoo passes n_warmup_steps=n_evaluations // 3 with evaluations numbered from 1: the pruner only skips
        # steps below the warm-up, so a trial of 5 evaluations could be pruned at its first. One more keeps the
        # first third (rounded down) of the evaluations safe, as rl-zoo's setting intends.
        warmup = n_evaluations // 3 + 1 if n_evaluations >= 3 else 0
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=warmup)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}: median or none")


class TrialEvalCallback(RoundCallback):
    """
    Evaluate ``J̄`` at ``n_evaluations`` points of the budget, report it to an Optuna trial and stop a pruned trial
    (rl-zoo's ``TrialEvalCallback``, with the federated objective).

    The federated algorithms are evaluated after a completed round (the only consistent state of the global policy),
    SB3's A2C and PPO at the env step that passes the point. A round that passes several points reports the same
    ``J̄`` at each, so that every trial has a value at every step the pruner compares.

    :param eval_env: the federated env to evaluate on (one sub-env per episode)
    :param trial: the Optuna trial
    :param n_evaluations: evaluations over the budget
    :param total_timesteps: the trial's budget
    :param deterministic: evaluate the deterministic policy
    :param verbose: 1: print each evaluation
    """

    def __init__(
        self,
        eval_env: FederatedVecEnv,
        trial: optuna.Trial,
        n_evaluations: int,
        total_timesteps: int,
        deterministic: bool = True,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.eval_env = eval_env
        self.trial = trial
        self.n_evaluations = n_evaluations
        self.total_timesteps = total_timesteps
        self.deterministic = deterministic
        self.eval_idx = 0
        self.is_pruned = False
        self.last_mean_reward = -math.inf
        self.last_per_agent: list[float] = []

    def _due(self) -> int:
        # how many of the n evaluation points (k / n of the budget, k = 1..n) the training has passed
        return min(self.n_evaluations, self.num_timesteps * self.n_evaluations // self.total_timesteps)

    def evaluate(self) -> bool:
        """
        Evaluate and report if an evaluation point was passed.

        :return: ``False`` to stop training (the trial is pruned or diverged)
        """
        due = self._due()
        if due <= self.eval_idx:
            return True
        per_agent = evaluate_agents(self.model, self.eval_env, n_episodes_per_env=1, deterministic=self.deterministic)
        self.last_per_agent = [float(r) for r in per_agent]
        self.last_mean_reward = float(np.mean(per_agent))
        if self.verbose >= 1:
            print(f"trial {self.trial.number}: J = {self.last_mean_reward:.3f} at {self.num_timesteps} steps")
        if not math.isfinite(self.last_mean_reward):
            self.trial.set_user_attr("diverged", f"J = {self.last_mean_reward} at {self.num_timesteps} steps")
            self.is_pruned = True
            return False
        for step in range(self.eval_idx + 1, due + 1):
            self.trial.report(self.last_mean_reward, step)
        self.eval_idx = due
        if self.trial.should_prune():
            self.is_pruned = True
            return False
        return True

    def _on_step(self) -> bool:
        from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm

        if isinstance(self.model, FederatedAlgorithm):
            return True  # evaluated at the end of a round
        return self.evaluate()

    def _on_round_end(self) -> bool:
        return self.evaluate()


class Objective:
    """
    One trial: sample, validate, train, evaluate (picklable, no closures).

    :param algo: the algorithm name
    :param env_id: the env id
    :param base_entry: the config entry being tuned (file entry and ``-params`` applied)
    :param budget: env steps per trial
    :param n_evaluations: evaluations per trial
    :param eval_episodes: episodes per agent per evaluation
    :param seed: trial ``k`` trains with seed ``seed + k`` (its evaluation env with ``seed + k + 10**6``)
    :param device: torch device
    :param where: config file and env id, for messages
    :param verbose: 1: print each evaluation
    """

    def __init__(
        self,
        algo: str,
        env_id: str,
        base_entry: dict[str, Any],
        budget: int,
        n_evaluations: int,
        eval_episodes: int,
        seed: int,
        device: str = "auto",
        where: str = "<config>",
        verbose: int = 0,
    ) -> None:
        self.algo = algo
        self.env_id = env_id
        self.base_entry = dict(base_entry)
        self.budget = budget
        self.n_evaluations = n_evaluations
        self.eval_episodes = eval_episodes
        self.seed = seed
        self.device = device
        self.where = where
        self.verbose = verbose

    def entry(self, trial: optuna.Trial) -> dict[str, Any]:
        """
        :param trial: the trial
        :return: the trial's config entry (base entry, sampled values, per-trial budget)
        """
        from sb3_fedpg.zoo.hyperparams_opt import SAMPLERS, apply_sampled

        return {**apply_sampled(self.base_entry, SAMPLERS[self.algo](trial)), "n_timesteps": self.budget}

    def __call__(self, trial: optuna.Trial) -> float:
        """
        :param trial: the trial
        :return: the last evaluation's ``J̄``
        """
        import optuna

        from sb3_fedpg import make_federated_vec_env
        from sb3_fedpg.zoo import get_algo_class
        from sb3_fedpg.zoo.config import ZooConfigError, validate_hyperparams

        algo_class = get_algo_class(self.algo)
        entry = self.entry(trial)
        # A sampled set that does not validate is a sampler bug: the trial fails (ZooConfigError), the study goes on.
        hyperparams = validate_hyperparams(entry, algo_class, f"{self.where}, trial {trial.number}")
        seed = self.seed + trial.number
        trial.set_user_attr("seed", seed)

        def federation(n_envs_per_agent: int, env_seed: int) -> FederatedVecEnv:
            return make_federated_vec_env(
                self.env_id,
                n_agents=hyperparams.n_agents,
                n_envs_per_agent=n_envs_per_agent,
                env_kwargs=hyperparams.env_kwargs,
                seed=env_seed,
            )

        env = federation(hyperparams.n_envs_per_agent, seed)
        eval_env = federation(self.eval_episodes, seed + 10**6)
        try:
            try:
                model = algo_class(env=env, seed=seed, verbose=0, device=self.device, **hyperparams.model_kwargs)
            except ValueError as error:  # the algorithm's own cross-checks: a sampler bug as well, not a divergence
                raise ZooConfigError(f"{self.where}, trial {trial.number}: {algo_class.__name__} refused: {error}") from error
            callback = TrialEvalCallback(eval_env, trial, self.n_evaluations, self.budget, verbose=self.verbose)
            model.learn(self.budget, callback=callback)
        except DIVERGED as error:
            if isinstance(error, ZooConfigError):
                raise
            # Random hyperparameters can diverge (NaN): prune them, as rl-zoo does, with the reason on record.
            trial.set_user_attr("diverged", f"{type(error).__name__}: {error}"[:500])
            print(f"trial {trial.number} diverged ({type(error).__name__}: {error}); pruned", file=sys.stderr)
            raise optuna.TrialPruned() from error
        finally:
            env.close()
            eval_env.close()
        if callback.is_pruned:
            raise optuna.TrialPruned()
        trial.set_user_attr("per_agent", callback.last_per_agent)
        return callback.last_mean_reward


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """
    :param study: a study
    :return: its trials by state: ``complete``, ``pruned``, ``failed`` (and ``running``, ``waiting``)
    """
    from optuna.trial import TrialState

    names = {
        TrialState.COMPLETE: "complete",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "waiting",
    }
    counts = dict.fromkeys(names.values(), 0)
    for trial in study.get_trials(deepcopy=False):
        counts[names[trial.state]] += 1
    return counts


def write_trials_csv(study: optuna.Study, path: str | os.PathLike) -> None:
    """
    The study's trials as CSV, with the columns of Optuna's ``study.trials_dataframe()`` (``number``, ``value``,
    ``datetime_start``, ``datetime_complete``, ``duration``, ``params_<name>``, ``user_attrs_<name>``, ``state``) and
    ``intermediate_values`` (the reported ``J̄`` by evaluation, as JSON); written without pandas (not a dependency).

    :param study: the study
    :param path: the CSV file
    """
    import csv
    import json

    trials = study.get_trials(deepcopy=False)
    params = sorted({name for trial in trials for name in trial.params})
    attrs = sorted({name for trial in trials for name in trial.user_attrs})
    header = ["number", "value", "datetime_start", "datetime_complete", "duration"]
    header += [f"params_{name}" for name in params] + [f"user_attrs_{name}" for name in attrs]
    header += ["intermediate_values", "state"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for trial in trials:
            duration = trial.duration
            row: list[Any] = [trial.number, trial.value, trial.datetime_start, trial.datetime_complete, duration]
            row += [trial.params.get(name, "") for name in params]
            row += [trial.user_attrs.get(name, "") for name in attrs]
            row += [
                json.dumps({str(step): value for step, value in sorted(trial.intermediate_values.items())}),
                trial.state.name,
            ]
            writer.writerow(["" if value is None else value for value in row])


def best_entry(algo: str, base_entry: dict[str, Any], params: dict[str, Any], n_timesteps: int) -> dict[str, Any]:
    """
    :param algo: the algorithm name
    :param base_entry: the config entry that was tuned
    :param params: the best trial's Optuna parameters
    :param n_timesteps: the budget to write (the base entry's own)
    :return: the ready config entry
    """
    from sb3_fedpg.zoo.hyperparams_opt import apply_sampled, sampled_hyperparams

    entry = apply_sampled(base_entry, sampled_hyperparams(algo, params))
    entry["n_timesteps"] = int(n_timesteps)
    # the family's parameters last, as in the config files (the sampled keys come after the base entry's)
    if "env_kwargs" in entry:
        entry["env_kwargs"] = entry.pop("env_kwargs")
    return entry


def write_best(path: pathlib.Path, env_id: str, entry: dict[str, Any]) -> str:
    """
    Put ``entry`` under ``env_id`` in the config file ``path`` (other env ids' entries are kept).

    :param path: ``best_hyperparameters.yml``
    :param env_id: the env id
    :param entry: the config entry
    :return: the YAML text of ``{env_id: entry}``
    """
    from sb3_fedpg.common.files import atomic_write_text
    from sb3_fedpg.zoo.config import load_config_file

    content = load_config_file(path) if path.is_file() else {}
    content[env_id] = entry
    atomic_write_text(path, yaml.safe_dump(content, sort_keys=False))
    return yaml.safe_dump({env_id: entry}, sort_keys=False)


def optimize(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str] | None = None) -> pathlib.Path:
    """
    Run (or continue) a study from the trainer's parsed arguments.

    :param args: the parsed arguments of ``sb3_fedpg.zoo.train`` (``--optimize`` given)
    :param parser: the parser (for argument errors)
    :param argv: the arguments, for the study's recorded command
    :return: the ``best_hyperparameters.yml`` written (or, if no trial completed, the report CSV)
    """
    import optuna
    from optuna.trial import TrialState

    from sb3_fedpg.zoo import get_algo_class
    from sb3_fedpg.zoo.config import apply_overrides, load_config_file, parse_overrides, select_entry, validate_hyperparams
    from sb3_fedpg.zoo.train import env_name

    for option in ("n_trials", "n_jobs", "eval_episodes"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.n_startup_trials < 0:
        parser.error(f"--n-startup-trials must be >= 0, got {args.n_startup_trials}")
    if args.resume or args.save_freq_rounds or args.track:
        parser.error("--optimize does not combine with --resume, --save-freq-rounds or --track")

    where = f"{args.conf_file} [{args.env}]"
    base = apply_overrides(
        select_entry(load_config_file(args.conf_file), args.env, args.conf_file), parse_overrides(args.hyperparams)
    )
    validate_hyperparams(base, get_algo_class(args.algo), where)  # the entry itself, before any trial
    full_budget = int(base["n_timesteps"])
    budget = args.n_timesteps if args.n_timesteps > 0 else full_budget
    n_evaluations = args.n_evaluations if args.n_evaluations is not None else max(1, budget // 100_000)
    if not 1 <= n_evaluations <= budget:
        parser.error(f"--n-evaluations must be in [1, {budget}] (the per-trial budget), got {n_evaluations}")

    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose >= 1 else optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=create_sampler(args.sampler, args.n_startup_trials, args.seed),
        pruner=create_pruner(args.pruner, args.n_startup_trials, n_evaluations),
        storage=_storage(args.storage),
        study_name=args.study_name,
        load_if_exists=True,
        direction="maximize",
    )
    if "command" not in study.user_attrs:
        command = [sys.executable, "-m", "sb3_fedpg.zoo.train", *(sys.argv[1:] if argv is None else argv)]
        study.set_user_attr("command", shlex.join(command))
        study.set_user_attr("base_entry", {key: str(value) for key, value in base.items()})
    if args.verbose >= 1:
        print(
            f"Optimizing {args.algo} on {args.env}: {args.n_trials} trials of {budget} steps, {n_evaluations} "
            f"evaluation(s) of {args.eval_episodes} episode(s) per agent; sampler {args.sampler}, pruner {args.pruner}"
        )

    objective = Objective(
        args.algo,
        args.env,
        base,
        budget,
        n_evaluations,
        args.eval_episodes,
        seed=args.seed,
        device=args.device,
        where=where,
        verbose=max(0, args.verbose - 1),
    )
    from sb3_fedpg.zoo.config import ZooConfigError

    optimize_kwargs: dict[str, Any] = {"n_jobs": args.n_jobs, "gc_after_trial": True, "catch": (ZooConfigError,)}
    started = time.time()
    try:
        if args.max_total_trials is not None:
            # As rl-zoo: running trials count, or every process would run its own last trials past the maximum.
            states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            if len(study.get_trials(deepcopy=False, states=states)) < args.max_total_trials:
                callbacks = [optuna.study.MaxTrialsCallback(args.max_total_trials, states=states)]
                study.optimize(objective, callbacks=callbacks, **optimize_kwargs)
        else:
            study.optimize(objective, n_trials=args.n_trials, **optimize_kwargs)
    except KeyboardInterrupt:  # as rl-zoo: an interrupted study still writes its report
        pass
    elapsed = time.time() - started

    log_path = pathlib.Path(args.log_folder) / args.algo
    log_path.mkdir(parents=True, exist_ok=True)
    report = log_path / (
        f"report_{env_name(args.env)}_{args.n_trials}-trials-{budget}-{args.sampler}-{args.pruner}_{int(time.time())}.csv"
    )
    write_trials_csv(study, report)
    counts = trial_counts(study)
    print(
        f"Study {study.study_name!r}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed "
        f"trial(s) ({elapsed:.0f} s in this process). Report: {report}"
    )
    if counts["complete"] == 0:
        print("No trial completed: no best hyperparameters to write.", file=sys.stderr)
        return report
    best = study.best_trial
    entry = best_entry(args.algo, base, best.params, full_budget)
    validate_hyperparams(entry, get_algo_class(args.algo), f"best trial {best.number}")
    best_file = log_path / "best_hyperparameters.yml"
    text = write_best(best_file, args.env, entry)
    print(
        f"Best trial: {best.number}, J = {best.value:.3f}. Its entry (n_timesteps: the entry's full budget), in {best_file}:"
    )
    print(text, end="")
    return best_file


__all__ = [
    "Objective",
    "TrialEvalCallback",
    "add_arguments",
    "best_entry",
    "create_pruner",
    "create_sampler",
    "optimize",
    "trial_counts",
    "write_best",
    "write_trials_csv",
]

"""
Train FederatedPG, FederatedPPO, A2C or PPO from an rl-zoo style YAML config.

.. code-block:: bash

    python -m sb3_fedpg.zoo.train --algo fedpg --env sb3_fedpg/HeteroCartPole-v0 \\
        --conf-file zoo_configs/fedpg.yml -n 100000 --seed 0 -f logs \\
        -params local_steps:5 env_kwargs.heterogeneity:0.5 --track --num-threads 1

The run folder follows rl-zoo: ``<log folder>/<algo>/<env name>_<run id>/`` holds the model
(``<env name>.zip``), the SB3 logs (``progress.csv``, TensorBoard events, W&B files with
``--track``) and ``<env name>/{config.yml, args.yml, command.txt}``; ``<env name>`` is the env
id with ``/`` replaced by ``-``. ``config.yml`` holds the hyperparameters as used (file entry,
overrides and ``-n`` applied), so it alone rebuilds the env for :mod:`sb3_fedpg.zoo.enjoy`.
``--eval-freq`` adds ``evaluations.npz`` (every agent's evaluation returns under its own reward,
:class:`~sb3_fedpg.common.callbacks.FederatedEvalCallback`), which :mod:`sb3_fedpg.zoo.plot` draws.

Every algorithm runs on the same federated ``VecEnv`` (``N`` agents x ``M`` sub-envs, each
agent with its own reward): FederatedPG and FederatedPPO train one policy federatedly; A2C and PPO train one
policy centrally on the pooled environments (the privacy-violating reference).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import sys
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, cast

import yaml

from sb3_fedpg.common.cli import ArgumentParser, interrupted_exit_code, sigterm_as_interrupt
from sb3_fedpg.zoo import ZOO_ALGOS, default_config_file

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from sb3_fedpg.common.persistence import FederatedPersistenceMixin


#: The observation normaliser's statistics in ``<run>/<env name>/`` (``normalize`` in the config), as in rl-zoo.
VEC_NORMALIZE_FILE = "vecnormalize.pkl"


def env_name(env_id: str) -> str:
    """
    :param env_id: a Gymnasium id
    :return: the id as a folder name, rl-zoo style (``/`` -> ``-``)
    """
    return env_id.replace("/", "-").replace(":", "-")


def latest_run_id(log_path: str | os.PathLike, name: str) -> int:
    """
    :param log_path: ``<log folder>/<algo>``
    :param name: the env name
    :return: the largest ``<run id>`` of the ``<name>_<run id>`` folders there (0 if none)
    """
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)$")
    ids = [int(m[1]) for p in pathlib.Path(log_path).glob(f"{name}_*") if (m := pattern.match(p.name)) and p.is_dir()]
    return max(ids, default=0)


def build_parser() -> argparse.ArgumentParser:
    """:return: the command-line parser (rl-zoo's argument names)"""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="fedpg", choices=ZOO_ALGOS, help="algorithm")
    parser.add_argument("--env", required=True, help="env id (a heterogeneous family such as sb3_fedpg/HeteroCartPole-v0)")
    parser.add_argument("--conf-file", "-conf", default=None, help="YAML hyperparameters (default: zoo_configs/<algo>.yml)")
    parser.add_argument("-n", "--n-timesteps", type=int, default=-1, help="overwrite n_timesteps of the config")
    parser.add_argument("--seed", type=int, default=-1, help="random seed (< 0: draw one)")
    parser.add_argument("-f", "--log-folder", default="logs", help="log folder")
    parser.add_argument(
        "-params",
        "--hyperparams",
        nargs="+",
        default=None,
        metavar="KEY:VALUE",
        help="overwrite hyperparameters, values in YAML (learning_rate:lin_0.01, env_kwargs.heterogeneity:0.5)",
    )
    parser.add_argument("--track", action="store_true", help="log to Weights & Biases (WANDB_MODE=offline works offline)")
    parser.add_argument("--wandb-project-name", default="sb3-fedpg", help="W&B project")
    parser.add_argument("--wandb-entity", default=None, help="W&B entity (team)")
    parser.add_argument("-tags", "--wandb-tags", nargs="+", default=[], help="W&B tags")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch threads (default 1: fastest for these small networks on CPU; < 0 keeps torch's default)",
    )
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--log-interval", type=int, default=-1, help="log every this many iterations (< 0: algorithm default)")
    parser.add_argument("--verbose", type=int, default=1, help="0: quiet, 1: SB3 logs on stdout")
    parser.add_argument("-P", "--progress", action="store_true", help="show a progress bar")
    parser.add_argument(
        "--eval-freq",
        type=int,
        default=-1,
        help="evaluate every agent's return under its own reward every this many env steps (all agents together; "
        "federated algorithms at the end of the round that reaches it), writing <run>/evaluations.npz (< 0: none)",
    )
    parser.add_argument(
        "--eval-episodes", type=int, default=5, help="episodes per agent at each evaluation (--eval-freq; --optimize's trials)"
    )
    parser.add_argument(
        "--eval-seed",
        type=int,
        default=10_000,
        help="seed of the evaluation env (default 10000 for every run, as the demo: every run is evaluated from the "
        "same initial states)",
    )
    parser.add_argument(
        "--save-freq-rounds",
        type=int,
        default=0,
        help="fedpg: write a resumable checkpoint every this many rounds to <run>/checkpoints (0: none)",
    )
    parser.add_argument(
        "--resume",
        default=None,
        help="fedpg: continue from this checkpoint (from --save-freq-rounds) up to the same n_timesteps, bit-identically",
    )
    from sb3_fedpg.zoo.optimize import add_arguments

    add_arguments(parser)  # --optimize and the study's options (rl-zoo's names)
    return parser


def train(argv: list[str] | None = None) -> pathlib.Path:
    """
    Run one training from command-line arguments (or, with ``--optimize``, a hyperparameter study:
    :mod:`sb3_fedpg.zoo.optimize`).

    :param argv: arguments (``None``: ``sys.argv[1:]``)
    :return: the run folder (``--optimize``: the ``best_hyperparameters.yml`` written)
    """
    parser = build_parser()
    args = parser.parse_args(argv)

    import numpy as np
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.logger import configure

    from sb3_fedpg import make_federated_vec_env
    from sb3_fedpg.common.vec_normalize import find_vec_normalize
    from sb3_fedpg.zoo import get_algo_class
    from sb3_fedpg.zoo.config import apply_overrides, load_config_file, parse_overrides, select_entry, validate_hyperparams

    check_arguments(parser, args)
    if args.num_threads > 0:
        th.set_num_threads(args.num_threads)
    if args.seed < 0:
        args.seed = int(np.random.default_rng().integers(2**31 - 1))
    args.conf_file = os.fspath(args.conf_file or default_config_file(args.algo))
    if args.optimize:
        from sb3_fedpg.zoo.optimize import optimize

        # -n is the per-trial budget; returns best_hyperparameters.yml
        return optimize(args, parser, argv)

    # Everything about the config is checked before any folder is made or env is built.
    algo_class = get_algo_class(args.algo)
    entry = select_entry(load_config_file(args.conf_file), args.env, args.conf_file)
    entry = apply_overrides(entry, parse_overrides(args.hyperparams))
    if args.n_timesteps > 0:
        entry["n_timesteps"] = args.n_timesteps
    hyperparams = validate_hyperparams(entry, algo_class, f"{args.conf_file} [{args.env}]")
    if (args.resume or args.save_freq_rounds) and args.algo not in ("fedpg", "feda2c"):
        parser.error("--resume and --save-freq-rounds are for --algo fedpg and feda2c")
    if args.save_freq_rounds < 0:
        parser.error(f"--save-freq-rounds must be >= 0, got {args.save_freq_rounds}")
    if args.eval_freq > 0 and args.eval_episodes < 1:
        parser.error(f"--eval-episodes must be >= 1, got {args.eval_episodes}")

    model: BaseAlgorithm
    if args.resume:
        if not os.path.isfile(args.resume):
            parser.error(f"--resume: no such checkpoint file {args.resume!r}")
        # A checkpoint of another run (env id, agents, env parameters) is refused before anything is loaded or made.
        problem = resume_problem(args.resume, args.env, hyperparams)
        if problem:
            parser.error(f"--resume: {problem}")
        # The checkpoint holds the env (with its state), the RNG states and the model.
        # --resume is for --algo fedpg/feda2c (checked above): a FederatedPG
        try:
            model = cast("type[FederatedPersistenceMixin]", algo_class).load_checkpoint(args.resume, device=args.device)
        except ValueError as error:  # truncated, corrupt, NaN, another algorithm's: said in one line
            parser.error(f"--resume: {error}")
        model.verbose = args.verbose
        env = model.get_env()
        assert env is not None  # load_checkpoint restores the saved env (or refuses)
        problem = resumed_env_problem(model, args.env, hyperparams)
        if problem:
            env.close()
            parser.error(f"--resume: {args.resume}: {problem}")
    else:
        import gymnasium

        from sb3_fedpg.zoo.config import ZooConfigError

        try:
            env = make_federated_vec_env(
                args.env,
                n_agents=hyperparams.n_agents,
                n_envs_per_agent=hyperparams.n_envs_per_agent,
                env_kwargs=hyperparams.env_kwargs,
                seed=args.seed,
            )
        except TypeError as error:  # the env's constructor refused a keyword: a config error, said as one
            raise ZooConfigError(f"{args.env}: bad 'env_kwargs' {hyperparams.env_kwargs!r}: {error}") from error
        except (ValueError, gymnasium.error.Error) as error:  # an unknown id, a family parameter out of range
            raise ZooConfigError(f"--env {args.env}: {error}") from error
        try:
            if hyperparams.normalize is not None:
                from sb3_fedpg.zoo.config import normalizer_class

                env = normalizer_class(algo_class)(env, **hyperparams.normalize)
            model = algo_class(env=env, seed=args.seed, verbose=args.verbose, device=args.device, **hyperparams.model_kwargs)
        except (ValueError, TypeError) as error:  # the algorithm refused this config for this env: said in one line
            env.close()
            raise ZooConfigError(f"{args.conf_file} [{args.env}]: {error}") from error

    # Which run this model belongs to, saved with it (plain JSON in the zip): --resume checks it.
    model.zoo_run = zoo_run_record(args.env, hyperparams)  # type: ignore[attr-defined]  # an extra attribute, saved too

    name = env_name(args.env)
    log_path = pathlib.Path(args.log_folder) / args.algo
    save_path = claim_run_folder(log_path, name)
    params_path = save_path / name
    params_path.mkdir()
    _save_run_files(params_path, entry, args, argv)
    formats = (["stdout"] if args.verbose >= 1 else []) + ["csv", "tensorboard"]
    if args.track:
        from sb3_fedpg.common.wandb_logger import configure_wandb_logger

        logger = configure_wandb_logger(
            model,
            project=args.wandb_project_name,
            folder=save_path,
            format_strings=formats,
            name=f"{name}__{args.algo}__{args.seed}__{int(time.time())}",
            config={**entry, "env_id": args.env, "algo_name": args.algo, "seed": args.seed},
            entity=args.wandb_entity,
            tags=args.wandb_tags or None,
        )
    else:
        logger = configure(os.fspath(save_path), formats)
        model.set_logger(logger)

    learn_kwargs: dict[str, Any] = {"progress_bar": args.progress}
    if args.log_interval > 0:
        learn_kwargs["log_interval"] = args.log_interval
    callbacks: list[BaseCallback] = []
    if args.save_freq_rounds > 0:
        from sb3_fedpg.common.callbacks import RoundCheckpointCallback

        callbacks.append(RoundCheckpointCallback(args.save_freq_rounds, os.fspath(save_path / "checkpoints")))
    eval_env = None
    if args.eval_freq > 0:
        from sb3_fedpg.common.callbacks import FederatedEvalCallback

        # Each agent's episodes: one on each of --eval-episodes sub-environments per agent, all in lock-step.
        eval_env = make_federated_vec_env(
            args.env,
            n_agents=getattr(env, "n_agents", hyperparams.n_agents),
            n_envs_per_agent=args.eval_episodes,
            env_kwargs=hyperparams.env_kwargs,
            seed=args.eval_seed,
        )
        callbacks.append(FederatedEvalCallback(eval_env, args.eval_freq, log_path=save_path, verbose=args.verbose))
    if callbacks:
        learn_kwargs["callback"] = callbacks[0] if len(callbacks) == 1 else CallbackList(callbacks)
    budget = hyperparams.n_timesteps
    if args.resume:
        # Same total budget as the interrupted run: continue the counters and the schedules.
        budget, learn_kwargs["reset_num_timesteps"] = max(budget - model.num_timesteps, 0), False
    interrupted: KeyboardInterrupt | None = None
    try:
        # SIGTERM (kill, docker stop, a scheduler's preemption) ends like Ctrl-C: at a round boundary (an unfinished
        # round is rolled back), with the model saved — and a resumable checkpoint with --save-freq-rounds.
        with sigterm_as_interrupt():
            model.learn(budget, **learn_kwargs)
    except KeyboardInterrupt as error:  # as rl-zoo: an interrupted run still saves its model
        interrupted = error
        if args.save_freq_rounds > 0:
            checkpoint = save_path / "checkpoints" / f"fedpg_{model._n_rounds}_rounds.zip"  # type: ignore[attr-defined]
            if not checkpoint.exists():
                model.save_checkpoint(checkpoint)  # type: ignore[attr-defined]  # fedpg only (checked above)
    finally:
        model.save(save_path / f"{name}.zip")
        vec_normalize = find_vec_normalize(env)
        if vec_normalize is not None:  # rl-zoo's file: enjoy loads it (training=False) around its evaluation env
            vec_normalize.save(os.fspath(params_path / VEC_NORMALIZE_FILE))
        env.close()
        if eval_env is not None:
            eval_env.close()
        logger.close()
    if interrupted is not None:
        steps = f"{model.num_timesteps} of {hyperparams.n_timesteps} env steps"
        raise RunInterrupted(
            save_path,
            interrupted,
            f"interrupted ({interrupted or 'Ctrl-C'}) after {steps}: saved the "
            f"model and logs to {save_path}"
            + (" and a checkpoint to resume from (--resume)" if args.save_freq_rounds > 0 else ""),
        )
    if args.verbose >= 1:
        print(f"Saved the model and logs to {save_path}")
    return save_path


class RunInterrupted(Exception):
    """
    :func:`train` was interrupted (Ctrl-C or SIGTERM) and saved what it had; :func:`main` exits with 130 or 143.

    :param run: the run folder, with the saved model
    :param interrupt: the interruption
    :param message: what was saved, for the user
    """

    def __init__(self, run: pathlib.Path, interrupt: KeyboardInterrupt, message: str) -> None:
        super().__init__(message)
        self.run = run
        self.exit_code = interrupted_exit_code(interrupt)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """
    The command-line values that need more than a type: each refused with a one-line ``error:``, before anything is
    built or written.

    :param parser: the parser (for its ``error``)
    :param args: the parsed arguments
    """
    import torch as th

    if args.num_threads == 0:
        parser.error("--num-threads must be >= 1 (or < 0 for torch's default), got 0")
    if args.seed >= 2**32:
        parser.error(f"--seed must be < 2**32 (or < 0 to draw one), got {args.seed}")
    if str(args.device).startswith("cuda") and not th.cuda.is_available():
        parser.error(
            f"--device {args.device}: no CUDA GPU is available here (torch.cuda.is_available() is False); "
            "use --device cpu (or auto)"
        )
    for part in (pathlib.Path(args.log_folder), *pathlib.Path(args.log_folder).parents):
        if part.exists():
            if not part.is_dir():
                parser.error(f"-f/--log-folder {args.log_folder}: {part} is a file, not a folder")
            break


def claim_run_folder(log_path: pathlib.Path, name: str, attempts: int = 1000) -> pathlib.Path:
    """
    Create the next ``<log_path>/<name>_<id>`` folder, atomically: two runs started at once with the same ``-f``
    get different ids (rl-zoo's "latest id + 1", made safe against the race).

    :param log_path: ``<log folder>/<algo>``
    :param name: the env name
    :param attempts: ids to try past the latest one
    :return: the new, empty run folder
    """
    log_path.mkdir(parents=True, exist_ok=True)
    first = latest_run_id(log_path, name) + 1
    for run_id in range(first, first + attempts):
        folder = log_path / f"{name}_{run_id}"
        try:
            folder.mkdir()
        except FileExistsError:  # another run took it meanwhile
            continue
        return folder
    raise RuntimeError(f"no free run folder {name}_<id> in {log_path} after {attempts} tries")


def zoo_run_record(env_id: str, hyperparams: Any) -> dict[str, Any]:
    """
    :param env_id: the run's env id
    :param hyperparams: its validated :class:`~sb3_fedpg.zoo.config.ZooHyperparams`
    :return: what identifies the run's environment, stored in the model as ``zoo_run`` (plain JSON values)
    """
    import json

    try:
        env_kwargs = json.loads(json.dumps(hyperparams.env_kwargs))
    except (TypeError, ValueError):  # a YAML value JSON cannot hold (a date): compared by its text
        env_kwargs = repr(hyperparams.env_kwargs)
    return {"env_id": env_id, "env_kwargs": env_kwargs}


def _legacy_env_id(path: str | os.PathLike) -> str | None:
    # A checkpoint written before models recorded zoo_run, inside its run folder <run>/checkpoints/:
    # <run>/<env name>/args.yml says which env the run was for.
    from sb3_fedpg.zoo.config import ZooConfigError, parse_yaml

    run = pathlib.Path(path).resolve().parent.parent
    found = []
    for args_file in run.glob("*/args.yml"):
        try:
            content = parse_yaml(args_file.read_text(), os.fspath(args_file))
        except (OSError, ZooConfigError):
            continue
        if isinstance(content, dict) and isinstance(content.get("env"), str):
            found.append(content["env"])
    return found[0] if len(set(found)) == 1 else None


def resume_problem(path: str | os.PathLike, env_id: str, hyperparams: Any) -> str | None:
    """
    Whether a checkpoint belongs to the run being resumed, checked from its JSON metadata (nothing is unpickled).

    :param path: the checkpoint
    :param env_id: the env id given with ``--env``
    :param hyperparams: the validated hyperparameters of the resumed run
    :return: what does not match (``None``: nothing found wrong)
    """
    from sb3_fedpg.common.files import read_zip_json

    data = read_zip_json(path)
    if data is None:
        return None  # not an SB3 zip: load_checkpoint says what is wrong with it
    record = data.get("zoo_run")
    saved_env = record.get("env_id") if isinstance(record, dict) else _legacy_env_id(path)
    if saved_env is not None and saved_env != env_id:
        return (
            f"{path} is a checkpoint of env {saved_env!r}, not of {env_id!r} (--env): resume it with "
            f"--env {saved_env}. Nothing was written."
        )
    if isinstance(record, dict) and "env_kwargs" in record:
        wanted = zoo_run_record(env_id, hyperparams)["env_kwargs"]
        if record["env_kwargs"] != wanted:
            return (
                f"{path} was trained with env_kwargs {record['env_kwargs']!r}, but this config gives {wanted!r}. "
                "Nothing was written."
            )
    for key, wanted in (("n_agents", hyperparams.n_agents), ("n_envs_per_agent", hyperparams.n_envs_per_agent)):
        saved = data.get(key)
        if wanted is not None and isinstance(saved, int) and saved != wanted:
            return f"{path} was trained with {key}={saved}, but this config gives {key}={wanted}. Nothing was written."
    return None


def resumed_env_problem(model: Any, env_id: str, hyperparams: Any) -> str | None:
    """
    For checkpoints that do not say their env id: compare the spaces of the restored env with ``env_id``'s.

    :param model: the loaded checkpoint
    :param env_id: the env id given with ``--env``
    :param hyperparams: the validated hyperparameters of the resumed run
    :return: what does not match (``None``: the spaces agree, or the checkpoint names its env id)
    """
    if isinstance(getattr(model, "zoo_run", None), dict):
        return None  # checked from the metadata already
    from sb3_fedpg import make_federated_vec_env

    probe = make_federated_vec_env(env_id, n_agents=model.n_agents, n_envs_per_agent=1, env_kwargs=hyperparams.env_kwargs)
    try:
        for what in ("observation_space", "action_space"):
            if getattr(probe, what) != getattr(model, what):
                return (
                    f"the checkpoint's {what} {getattr(model, what)} is not {env_id!r}'s {getattr(probe, what)}: "
                    "it is a checkpoint of another env. Nothing was written."
                )
    finally:
        probe.close()
    return None


def _save_run_files(
    params_path: pathlib.Path, entry: dict[str, Any], args: argparse.Namespace, argv: list[str] | None
) -> None:
    from sb3_fedpg.common.files import atomic_write_text

    # Plain YAML only (safe_dump): the files are read back with the same safe loader.
    atomic_write_text(params_path / "config.yml", yaml.safe_dump(dict(OrderedDict(sorted(entry.items()))), sort_keys=True))
    atomic_write_text(params_path / "args.yml", yaml.safe_dump(dict(sorted(vars(args).items())), sort_keys=True))
    if argv is None:
        command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    else:  # called from Python: the equivalent command line
        command = shlex.join([sys.executable, "-m", "sb3_fedpg.zoo.train", *argv])
    atomic_write_text(params_path / "command.txt", command + "\n")


def main() -> None:
    """Command-line entry point."""
    from sb3_fedpg.zoo.config import ZooConfigError

    try:
        train()
    except ZooConfigError as error:
        sys.exit(f"error: {error}")
    except RunInterrupted as interrupted:
        print(interrupted, file=sys.stderr)
        sys.exit(interrupted.exit_code)


if __name__ == "__main__":
    main()

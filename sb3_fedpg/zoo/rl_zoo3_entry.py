"""
Run the library's federated algorithms with rl_zoo3's own trainer.

.. code-block:: bash

    python -m sb3_fedpg.zoo.rl_zoo3_entry --algo fedpg --env CartPole-v1 -n 20000 --num-threads 1

rl_zoo3's command line only accepts the algorithms of its ``ALGOS`` dict, and its
``--gym-packages`` option is imported too late to add one. Its ``train()`` reads ``ALGOS``
when it is called, though, so registering ``fedpg``, ``fedppo`` and ``fedsvrpgm`` first and then
calling it is enough; everything else (``-f``, ``-params``, ``--track``, ``--eval-freq``) is
rl_zoo3's. ``-optimize`` works too: :func:`register` also adds each algorithm's sampler
(:mod:`sb3_fedpg.zoo.hyperparams_opt`) to rl_zoo3's ``HYPERPARAMS_SAMPLER`` and ``HYPERPARAMS_CONVERTER``. Without
``--conf-file``, ``--algo fedpg`` reads ``zoo_configs/fedpg.yml`` of this checkout (rl_zoo3 has no
``hyperparams/fedpg.yml``), and likewise for the others.

**Nothing in a config file is evaluated or imported** for a federated algorithm: rl_zoo3's own reader is
replaced by :func:`read_hyperparameters`, which reads the file with the zoo's safe YAML loader (no
Python tags, alias bombs refused, see :mod:`sb3_fedpg.zoo.config`) and hands rl_zoo3 a
``policy_kwargs`` that is already a mapping, its ``activation_fn`` / ``optimizer_class`` names
(``tanh``, ``relu``, ``nn.Tanh``, ``torch.nn.ReLU``, ``adam``...) mapped to classes from a fixed
table. What rl_zoo3 would ``eval`` (``policy_kwargs``, ``normalize``, ``monitor_kwargs``,
``replay_buffer_*`` given as strings) or import and call by name (``env_wrapper``,
``vec_env_wrapper``, ``callback``, a dotted ``policy``) is refused with a
:class:`~sb3_fedpg.zoo.config.ZooConfigError` naming the key, and so is a Python config file.
(rl_zoo3's ``-params`` and ``--env-kwargs`` values are Python expressions that rl_zoo3 evaluates
on your own command line; :mod:`sb3_fedpg.zoo.train` reads them as YAML.) Other algorithms are
passed to rl_zoo3 untouched.

rl_zoo3 builds the env itself: ``n_envs`` copies of ``gym.make(env_id, **env_kwargs)``, all
identical. FederatedPG splits them into ``n_agents`` blocks (``n_agents`` must divide
``n_envs``), so every agent sees the same task. For heterogeneous agents use
:mod:`sb3_fedpg.zoo.train`, which builds the federated env of a family. Importing rl_zoo3
patches Gymnasium's ``TimeLimit`` (rl_zoo3's own doing), so this module is never imported by
``sb3_fedpg`` itself.
"""

from __future__ import annotations

import sys
from pprint import pprint
from typing import Any

from sb3_fedpg.zoo import FEDERATED_ALGOS, default_config_file

#: rl_zoo3 ``eval``s these keys when their value is a string.
EVALUATED_KEYS = ("policy_kwargs", "normalize", "monitor_kwargs", "replay_buffer_class", "replay_buffer_kwargs")
#: rl_zoo3 imports and calls the classes these keys name.
IMPORTED_KEYS = ("env_wrapper", "vec_env_wrapper", "callback")


class RlZooSampler:
    """
    One of :data:`sb3_fedpg.zoo.hyperparams_opt.SAMPLERS` with rl_zoo3's sampler signature (an object, not a closure).

    rl_zoo3's ``objective`` passes what the sampler returns straight to the algorithm's constructor (after the entry's
    own values: a sampled ``policy_kwargs`` replaces the entry's), so the config values are validated and built
    (schedules, activation classes) here.

    :param algo: a federated algorithm's name
    """

    def __init__(self, algo: str) -> None:
        self.algo = algo

    def __call__(self, trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        """
        :param trial: the Optuna trial
        :param n_actions: rl_zoo3's argument (unused)
        :param n_envs: rl_zoo3's argument (unused: the agents and their envs are the entry's)
        :param additional_args: rl_zoo3's argument (unused)
        :return: constructor arguments
        """
        from sb3_fedpg.zoo import get_algo_class
        from sb3_fedpg.zoo.config import validate_hyperparams
        from sb3_fedpg.zoo.hyperparams_opt import SAMPLERS

        sampled = SAMPLERS[self.algo](trial)
        built = validate_hyperparams({"n_timesteps": 1, **sampled}, get_algo_class(self.algo), f"{self.algo} sampler")
        return {key: value for key, value in built.model_kwargs.items() if key != "policy"}


class RlZooConverter:
    """
    rl_zoo3's ``HYPERPARAMS_CONVERTER`` entry (``--trial-id``): a stored trial's Optuna parameters to config values,
    which :func:`read_hyperparameters` applies to the entry and validates like the file's own.

    :param algo: a federated algorithm's name
    """

    def __init__(self, algo: str) -> None:
        self.algo = algo

    def __call__(self, sampled_params: dict[str, Any]) -> dict[str, Any]:
        """
        :param sampled_params: the trial's parameters (rl_zoo3's name)
        :return: config values
        """
        from sb3_fedpg.zoo.hyperparams_opt import sampled_hyperparams

        return sampled_hyperparams(self.algo, sampled_params)


def register() -> None:
    """
    Add every federated algorithm of the library (:data:`~sb3_fedpg.zoo.FEDERATED_ALGOS`) to ``rl_zoo3.ALGOS``, and
    its Optuna sampler to ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` (with a converter for ``--trial-id``).
    """
    import rl_zoo3
    from rl_zoo3 import hyperparams_opt

    from sb3_fedpg.zoo import FEDERATED_ALGOS, get_algo_class

    for name in FEDERATED_ALGOS:
        rl_zoo3.ALGOS[name] = get_algo_class(name)
        hyperparams_opt.HYPERPARAMS_SAMPLER[name] = RlZooSampler(name)
        hyperparams_opt.HYPERPARAMS_CONVERTER[name] = RlZooConverter(name)


def _algo(argv: list[str]) -> str | None:
    algo = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--algo"), None)
    return algo or next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--algo=")), None)


def safe_hyperparams(entry: dict[str, Any], where: str, algo: str = "fedpg") -> dict[str, Any]:
    """
    Refuse what rl_zoo3 would evaluate or import; resolve ``policy_kwargs`` class names ourselves.

    :param entry: one entry of a config file (overrides applied)
    :param where: file and entry, for error messages
    :param algo: the federated algorithm the entry is for (its policy aliases)
    :return: a copy of ``entry`` that rl_zoo3 can use without evaluating anything
    """
    from sb3_fedpg.zoo import get_algo_class
    from sb3_fedpg.zoo.config import ZooConfigError, _resolve_policy_kwargs

    algo_class = get_algo_class(algo)

    hyperparams = dict(entry)
    for key in EVALUATED_KEYS:
        if isinstance(hyperparams.get(key), str):
            raise ZooConfigError(
                f"{where}: {key!r} is the string {hyperparams[key]!r}, which rl_zoo3 would evaluate as Python; "
                f"write a mapping instead (e.g. policy_kwargs: {{net_arch: [64, 64], activation_fn: tanh}})."
            )
    for key in IMPORTED_KEYS:
        if key in hyperparams:
            raise ZooConfigError(
                f"{where}: {key!r} names classes that rl_zoo3 would import and call; it is not accepted in "
                f"{algo} config files (use sb3_fedpg.zoo.train, or wrap the env in your own script)."
            )
    policy = hyperparams.get("policy", "MlpPolicy")
    if not isinstance(policy, str) or policy not in algo_class.policy_aliases:
        raise ZooConfigError(
            f"{where}: bad value {policy!r} for 'policy': {algo_class.__name__} has {sorted(algo_class.policy_aliases)} "
            "(a dotted class path would be imported by rl_zoo3)."
        )
    if "policy_kwargs" in hyperparams:
        policy_class = algo_class.policy_aliases[policy]
        hyperparams["policy_kwargs"] = _resolve_policy_kwargs(hyperparams["policy_kwargs"], policy_class, where)
    return hyperparams


def read_hyperparameters(self: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Replaces ``rl_zoo3.exp_manager.ExperimentManager.read_hyperparameters`` for a federated ``--algo``: the same
    result (entry of the env id or ``default``, Optuna trial, ``-params``, ``--env-kwargs``), read safely.

    :param self: the ``ExperimentManager``
    :return: the hyperparameters for rl_zoo3 and those to save in ``config.yml`` (plain values)
    """
    from sb3_fedpg.zoo.config import ZooConfigError, load_config_file, select_entry

    config = str(self.config)
    if not config.endswith((".yml", ".yaml")):
        raise ZooConfigError(f"{config}: --algo {self.algo} reads YAML config files only (a Python config is code).")
    print(f"Loading hyperparameters from: {config}")
    env_id = self.env_name.gym_id
    hyperparams = select_entry(load_config_file(config), env_id, config)
    # rl_zoo3 tests `self.trial_id` for truth, which skips trial 0
    if self.storage and self.study_name and self.trial_id is not None:
        print("Loading from Optuna study...")
        from sb3_fedpg.zoo.hyperparams_opt import apply_sampled

        hyperparams = apply_sampled(hyperparams, self.load_trial(self.storage, self.study_name, self.trial_id))
    if self.custom_hyperparams is not None:
        hyperparams.update(self.custom_hyperparams)
    if "env_kwargs" in hyperparams and self.env_kwargs:
        hyperparams["env_kwargs"] = self.env_kwargs
        if self._eval_env_kwargs_args is None:
            self.eval_env_kwargs = hyperparams["env_kwargs"]
    # A plain dict (not rl_zoo3's OrderedDict): config.yml is then plain YAML that a safe loader reads.
    saved_hyperparams = {key: hyperparams[key] for key in sorted(hyperparams)}
    print("Default hyperparameters for environment (ones being tuned will be overridden):")
    pprint(saved_hyperparams)
    return safe_hyperparams(hyperparams, f"{config} [{env_id}]", self.algo), saved_hyperparams


def _with_default_config(argv: list[str]) -> list[str]:
    algo = _algo(argv)
    has_conf = any(arg in ("--conf-file", "-conf") or arg.startswith("--conf-file=") for arg in argv)
    if algo in FEDERATED_ALGOS and not has_conf:
        return [*argv, "--conf-file", str(default_config_file(algo))]
    return argv


class _TrialsTable:
    """What rl_zoo3 uses of ``study.trials_dataframe()`` (its ``to_csv``), for when pandas is not installed."""

    def __init__(self, study: Any) -> None:
        self.study = study

    def to_csv(self, path: str) -> None:
        """:param path: the report file"""
        from sb3_fedpg.zoo.optimize import write_trials_csv

        write_trials_csv(self.study, path)


def _trials_table(study: Any, *args: Any, **kwargs: Any) -> _TrialsTable:
    return _TrialsTable(study)


def _pandas_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("pandas") is None


def main(argv: list[str] | None = None) -> None:
    """
    Register the federated algorithms and run ``rl_zoo3.train.train()`` with ``argv``.

    :param argv: rl_zoo3 train arguments (``None``: ``sys.argv[1:]``)
    """
    register()
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.train import train

    from sb3_fedpg.common.cli import sigterm_as_interrupt
    from sb3_fedpg.zoo.config import ZooConfigError

    argv = _with_default_config(list(sys.argv[1:] if argv is None else argv))
    import optuna

    saved, original = sys.argv, ExperimentManager.read_hyperparameters
    original_table = optuna.Study.trials_dataframe
    sys.argv = [saved[0] if saved else "rl_zoo3_entry", *argv]
    if _algo(argv) in FEDERATED_ALGOS:
        ExperimentManager.read_hyperparameters = read_hyperparameters  # type: ignore[method-assign]  # patched for them
    if _pandas_missing():
        # rl_zoo3's -optimize writes its report with study.trials_dataframe(), which needs pandas (a dependency of
        # neither rl_zoo3 nor Optuna): without it the study would run and then crash. The same CSV, written without.
        optuna.Study.trials_dataframe = _trials_table  # type: ignore[assignment,method-assign]  # restored below
    try:
        # rl_zoo3 saves the model on KeyboardInterrupt: SIGTERM (a scheduler's preemption) gets the same treatment
        with sigterm_as_interrupt():
            train()
    except ZooConfigError as error:
        sys.exit(f"error: {error}")
    finally:
        sys.argv = saved
        ExperimentManager.read_hyperparameters = original  # type: ignore[method-assign]  # and restored
        optuna.Study.trials_dataframe = original_table  # type: ignore[method-assign]


if __name__ == "__main__":
    main()

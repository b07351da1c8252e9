"""
Optuna samplers of the zoo's algorithms: one function per algorithm, rl-zoo style (``sample_fedpg_params(trial)``).

Each sampler returns **config-file values** (plain YAML: numbers, strings, lists; ``lin_<start>`` for a linearly
decaying schedule; ``policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}``), not built objects. They are applied
to the config entry being tuned with :func:`~sb3_fedpg.zoo.config.apply_overrides` and checked by
:func:`~sb3_fedpg.zoo.config.validate_hyperparams` like any config, and the best trial's values are written back as a
config entry as they are. A trial's Optuna parameters are not always the hyperparameters themselves
(``one_minus_gamma``, a learning rate per local optimiser, ``lr_schedule``): :func:`sampled_hyperparams` turns any
trial's parameters back into values by running the sampler on an ``optuna.trial.FixedTrial``.

The federated knobs (see ``docs/algorithms.md``) are sampled with the usual ones:

- ``fedpg``: ``local_steps`` (H), ``server_learning_rate``, ``correction`` on/off and with it ``variance_control`` and
  ``anchor_batches``, ``local_optimizer`` (sgd/adam, each with its own learning-rate range), ``critic_learning_rate``;
- ``fedppo``: PPO's ``n_steps``, ``batch_size``, ``n_epochs``, ``clip_range``, ``max_grad_norm``, and ``correction``
  (``surrogate``/``linear``/off) with ``variance_control``, ``server_learning_rate``;
- ``fedsvrpgm``: ``local_steps``, ``momentum_coef`` (β), ``max_importance_weight``, ``server_learning_rate``;
- ``feda2c``: A2C's ranges (``a2c``'s sampler) with ``local_steps``, ``server_learning_rate`` and ``correction`` on/off;
- all: ``learning_rate`` (constant or ``lin_``), ``n_steps``, ``gamma``, ``gae_lambda`` (where used), ``ent_coef``,
  ``net_arch`` and ``activation_fn``. ``a2c`` and ``ppo`` (SB3, trained centrally) get the same usual ones.

The agents, sub-environments, family parameters and budget (``n_agents``, ``n_envs``, ``env_kwargs``,
``n_timesteps``) are never sampled: they define the task, not the learner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

#: ``net_arch`` choices by name (one list for the actor and the critic). Smaller than rl-zoo's ``medium`` (256, 256):
#: every agent runs its own copy of the actor and critic, and on 2 CPU cores a (256, 256) trial took minutes where a
#: (64, 64) one took seconds (HeteroCartPole, 8 agents).
NET_ARCHS: dict[str, list[int]] = {"tiny": [32, 32], "small": [64, 64], "medium": [128, 128]}
#: ``activation_fn`` choices (names the config reads, see :mod:`sb3_fedpg.zoo.config`).
ACTIVATIONS = ("tanh", "relu")


def _round(value: float) -> float:
    # Six significant digits: the YAML entry stays readable, and no trial is told apart by the seventh.
    return float(f"{value:.6g}")


def _learning_rate(trial: optuna.Trial, low: float, high: float, name: str = "learning_rate") -> float | str:
    """A learning rate in ``[low, high]`` (log scale), constant or linearly decaying to 0 (``lin_<start>``)."""
    value = _round(trial.suggest_float(name, low, high, log=True))
    if trial.suggest_categorical("lr_schedule", ["constant", "linear"]) == "linear":
        return f"lin_{value:g}"
    return value


def _discount(trial: optuna.Trial, gae: bool = True) -> dict[str, float]:
    """``gamma`` in [0.9, 0.999] and (``gae``) ``gae_lambda`` in [0.8, 0.999], both sampled as ``1 - x`` on a log scale."""
    values = {"gamma": _round(1 - trial.suggest_float("one_minus_gamma", 1e-3, 0.1, log=True))}
    if gae:
        values["gae_lambda"] = _round(1 - trial.suggest_float("one_minus_gae_lambda", 1e-3, 0.2, log=True))
    return values


def _policy(trial: optuna.Trial) -> dict[str, Any]:
    """``policy_kwargs``: ``net_arch`` (tiny / small / medium) and ``activation_fn`` (tanh / relu)."""
    net_arch = trial.suggest_categorical("net_arch", list(NET_ARCHS))
    activation = trial.suggest_categorical("activation_fn", list(ACTIVATIONS))
    return {"policy_kwargs": {"net_arch": list(NET_ARCHS[net_arch]), "activation_fn": activation}}


def _ent_coef(trial: optuna.Trial) -> float:
    return _round(trial.suggest_float("ent_coef", 1e-8, 0.05, log=True))


def sample_fedpg_params(trial: optuna.Trial) -> dict[str, Any]:
    """
    FederatedPG (Fast-FedPG / FedAvg-PG): local steps H, server step, the correction and its noise control, the
    local update rule, and the usual ones.

    :param trial: the Optuna trial
    :return: config values
    """
    local_optimizer = trial.suggest_categorical("local_optimizer", ["sgd", "adam"])
    # Plain gradient ascent and Adam want step sizes two orders of magnitude apart: one range each.
    if local_optimizer == "sgd":
        learning_rate = _learning_rate(trial, 1e-3, 0.5, "sgd_learning_rate")
    else:
        learning_rate = _learning_rate(trial, 1e-4, 1e-2, "adam_learning_rate")
    params: dict[str, Any] = {
        "local_optimizer": local_optimizer,
        "learning_rate": learning_rate,
        "local_steps": trial.suggest_categorical("local_steps", [1, 2, 5, 10, 20]),
        "n_steps": trial.suggest_categorical("n_steps", [8, 16, 32, 64]),
        "server_learning_rate": _round(trial.suggest_float("server_learning_rate", 0.5, 1.5)),
        "critic_learning_rate": _round(trial.suggest_float("critic_learning_rate", 1e-4, 3e-3, log=True)),
        "ent_coef": _ent_coef(trial),
        **_discount(trial),
    }
    params["correction"] = trial.suggest_categorical("correction", [True, False])
    if params["correction"]:
        params["variance_control"] = trial.suggest_categorical(
            "variance_control", ["none", "filtered", "control_variate", "snr_damping"]
        )
        anchor_batches = trial.suggest_categorical("anchor_batches", ["auto", "1", "2", "4"])
        params["anchor_batches"] = anchor_batches if anchor_batches == "auto" else int(anchor_batches)
    return {**params, **_policy(trial)}


def _ppo_core(trial: optuna.Trial) -> dict[str, Any]:
    """The hyperparameters PPO and FederatedPPO share (names and ranges after rl-zoo's ``sample_ppo_params``)."""
    return {
        "learning_rate": _learning_rate(trial, 1e-4, 3e-3),
        "n_steps": trial.suggest_categorical("n_steps", [16, 32, 64, 128]),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "n_epochs": trial.suggest_categorical("n_epochs", [1, 5, 10, 20]),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3]),
        "max_grad_norm": _round(trial.suggest_float("max_grad_norm", 0.3, 2.0, log=True)),
        "ent_coef": _ent_coef(trial),
        **_discount(trial),
        **_policy(trial),
    }


def sample_fedppo_params(trial: optuna.Trial) -> dict[str, Any]:
    """
    FederatedPPO: PPO's epochs, minibatches and clipping, the drift correction (``surrogate``, ``linear`` or off) with
    its noise control, the server step, and the usual ones. ``batch_size`` is per agent.

    :param trial: the Optuna trial
    :return: config values
    """
    params = _ppo_core(trial)
    correction = trial.suggest_categorical("correction", ["surrogate", "linear", "none"])
    params["correction"] = False if correction == "none" else correction
    if correction != "none":
        params["variance_control"] = trial.suggest_categorical("variance_control", ["snr_damping", "none"])
    params["server_learning_rate"] = _round(trial.suggest_float("server_learning_rate", 0.5, 1.5))
    return params


def sample_fedsvrpgm_params(trial: optuna.Trial) -> dict[str, Any]:
    """
    FederatedSVRPGM (FedSVRPG-M): local steps H, momentum β, importance-weight truncation, server step, and the usual
    ones (its default estimator, GPOMDP, has no ``gae_lambda``).

    :param trial: the Optuna trial
    :return: config values
    """
    truncation = trial.suggest_categorical("max_importance_weight", ["1.2", "1.8", "3", "none"])
    return {
        "learning_rate": _learning_rate(trial, 5e-3, 0.3),
        "local_steps": trial.suggest_categorical("local_steps", [1, 2, 5, 10, 20]),
        "n_steps": trial.suggest_categorical("n_steps", [16, 32, 64, 128]),
        "momentum_coef": _round(trial.suggest_float("momentum_coef", 0.05, 1.0)),
        "max_importance_weight": None if truncation == "none" else float(truncation),
        "server_learning_rate": _round(trial.suggest_float("server_learning_rate", 0.5, 1.5)),
        "ent_coef": _ent_coef(trial),
        **_discount(trial, gae=False),
        **_policy(trial),
    }


def sample_a2c_params(trial: optuna.Trial) -> dict[str, Any]:
    """
    SB3 A2C, trained centrally on the pooled agents (the reference).

    :param trial: the Optuna trial
    :return: config values
    """
    return {
        "learning_rate": _learning_rate(trial, 1e-5, 1e-2),
        "n_steps": trial.suggest_categorical("n_steps", [5, 8, 16, 32]),
        "normalize_advantage": trial.suggest_categorical("normalize_advantage", [False, True]),
        "max_grad_norm": _round(trial.suggest_float("max_grad_norm", 0.3, 2.0, log=True)),
        "ent_coef": _ent_coef(trial),
        **_discount(trial),
        **_policy(trial),
    }


def sample_feda2c_params(trial: optuna.Trial) -> dict[str, Any]:
    """
    FederatedA2C: A2C's ranges (:func:`sample_a2c_params`; the critics' step follows the actor's) with the federated
    knobs: local steps H, server step, the correction on/off.

    :param trial: the Optuna trial
    :return: config values
    """
    params = sample_a2c_params(trial)
    learning_rate = params["learning_rate"]  # a number, or "lin_<start>": the critics take the starting step
    params["critic_learning_rate"] = float(learning_rate[4:]) if isinstance(learning_rate, str) else learning_rate
    params["local_steps"] = trial.suggest_categorical("local_steps", [1, 2, 4, 8])
    params["server_learning_rate"] = _round(trial.suggest_float("server_learning_rate", 0.5, 1.5))
    params["correction"] = trial.suggest_categorical("correction", [True, False])
    return params


def sample_ppo_params(trial: optuna.Trial) -> dict[str, Any]:
    """
    SB3 PPO, trained centrally on the pooled agents (the reference): FederatedPPO's sampler without the federated
    knobs.

    :param trial: the Optuna trial
    :return: config values
    """
    return _ppo_core(trial)


#: The sampler of each zoo algorithm.
SAMPLERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "fedpg": sample_fedpg_params,
    "fedppo": sample_fedppo_params,
    "fedsvrpgm": sample_fedsvrpgm_params,
    "feda2c": sample_feda2c_params,
    "a2c": sample_a2c_params,
    "ppo": sample_ppo_params,
}


def sampled_hyperparams(algo: str, params: dict[str, Any]) -> dict[str, Any]:
    """
    The config values of a trial, from its Optuna parameters (``trial.params``, ``study.best_params``).

    :param algo: the algorithm name
    :param params: the trial's parameters
    :return: what the sampler returned for that trial
    """
    from optuna.trial import FixedTrial

    return SAMPLERS[algo](FixedTrial(params))


def apply_sampled(entry: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """
    :param entry: the config entry being tuned
    :param sampled: a sampler's values
    :return: the entry with them applied (``policy_kwargs`` updated key by key: a tuned entry's ``log_std_init``
        or ``ortho_init`` stay)
    """
    from sb3_fedpg.zoo.config import apply_overrides

    return apply_overrides(entry, sampled)


__all__ = [
    "SAMPLERS",
    "apply_sampled",
    "sample_a2c_params",
    "sample_feda2c_params",
    "sample_fedpg_params",
    "sample_fedppo_params",
    "sample_fedsvrpgm_params",
    "sample_ppo_params",
    "sampled_hyperparams",
]

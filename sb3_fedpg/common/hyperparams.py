"""
The federated algorithms' hyperparameters: one definition, one validation.

:class:`FedPGHyperparams` lists every hyperparameter of :class:`~sb3_fedpg.FederatedPG` with
its default, its documentation and its check. Every entry point validates through it: the
constructor, ``FederatedPG.load(path, **kwargs)`` (checked again when the model is set up),
the zoo config parser and the Flower run config (whose kebab-case keys are derived from these
fields). :class:`FedPPOHyperparams` and :class:`FedSVRPGMHyperparams` do the same for
:class:`~sb3_fedpg.FederatedPPO` and :class:`~sb3_fedpg.FederatedSVRPGM`. Only the standard library is imported,
so torch-free processes (a Flower ClientApp launcher, the zoo's config check) can use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

#: Gradient estimators (``estimator=``), baselines of ``gpomdp``/``reinforce`` (``baseline=``),
#: local update rules (``local_optimizer=``) and named server aggregators (``aggregator=``).
ESTIMATORS = ("gpomdp", "reinforce", "gae")
BASELINES = ("none", "mean")
LOCAL_OPTIMIZER_NAMES = ("sgd", "adam")
VARIANCE_CONTROLS = ("none", "control_variate", "snr_damping", "filtered")
AGGREGATOR_NAMES = ("mean", "median", "trimmed_mean", "norm_clipped_mean", "geometric_median")


class HyperparameterError(ValueError, AssertionError):
    """
    An invalid hyperparameter. A ``ValueError`` (this library's contract) that is also an ``AssertionError``: SB3
    checks its hyperparameters with ``assert``, so code written for SB3 (``except AssertionError``,
    ``pytest.raises(AssertionError)``) catches the federated algorithms' refusals too.
    """


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> None:
    """
    :param name: the hyperparameter's name (for the message)
    :param value: its value
    :raises HyperparameterError: unless ``value`` is an integer ``>= 1`` (``bool`` is not an integer here)
    """
    if not _is_int(value) or value < 1:
        raise HyperparameterError(f"{name} must be a positive integer, got {value!r}.")


def positive_float(name: str, value: Any) -> None:
    """
    :param name: the hyperparameter's name
    :param value: its value
    :raises HyperparameterError: unless ``value`` is a finite real number ``> 0``
    """
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise HyperparameterError(f"{name} must be a finite number > 0, got {value!r}.")


def _optional_positive_int(name: str, value: Any) -> None:
    if value is not None:
        positive_int(name, value)


def _optional_positive_float(name: str, value: Any) -> None:
    if value is not None:
        positive_float(name, value)


def _learning_rate(name: str, value: Any) -> None:
    # A schedule is checked each round, when it is evaluated (FederatedAlgorithm.current_learning_rate).
    if not callable(value):
        positive_float(name, value)


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        hint = " (a string such as 'False' is truthy: pass a real bool)" if isinstance(value, str) else ""
        raise HyperparameterError(f"{name} must be True or False, got {value!r}{hint}.")


#: FederatedPPO's corrections: ``"surrogate"`` (a per-sample advantage shift inside the clipped surrogate) and
#: ``"linear"`` (the SCAFFOLD-style term ``⟨g − a_i, θ⟩``, outside it); ``True`` means ``"linear"``.
PPO_CORRECTIONS = ("linear", "surrogate")


def ppo_correction_mode(value: bool | str) -> str | None:
    """
    :param value: FederatedPPO's ``correction`` argument
    :return: ``None`` (no correction), ``"linear"`` or ``"surrogate"``
    """
    if value is False or value == "none":
        return None
    if value is True:
        return "linear"
    if value in PPO_CORRECTIONS:
        return str(value)
    raise HyperparameterError(f"correction must be False, True (= 'linear'), 'linear' or 'surrogate', got {value!r}.")


#: FederatedPPO's noise controls of its correction: none, or ``"snr_damping"`` (each agent's ``g − a_i`` scaled by
#: ``β_i = SNR_i / (1 + SNR_i)``, its signal-to-noise ratio measured from two half-rollouts and averaged over rounds)
PPO_VARIANCE_CONTROLS = ("none", "snr_damping")


def _ppo_correction(name: str, value: Any) -> None:
    if not isinstance(value, bool) and value not in ("none", *PPO_CORRECTIONS):
        raise HyperparameterError(f"{name} must be False, True (= 'linear'), 'linear' or 'surrogate', got {value!r}.")


#: the normalisation modes of ``normalize_advantage``: one scale pooled over the agents (``"shared"``, what ``True``
#: means), each agent's own (``"per_agent"``: changes the objective, kept for comparison)
ADVANTAGE_NORMALIZATIONS = ("shared", "per_agent")


def advantage_normalization(value: bool | str) -> str | None:
    """
    :param value: an algorithm's ``normalize_advantage`` argument
    :return: ``None`` (off), ``"shared"`` (``True``) or ``"per_agent"``
    :raises HyperparameterError: for any other value
    """
    if value is False:
        return None
    if value is True:
        return "shared"
    if isinstance(value, str) and value in ADVANTAGE_NORMALIZATIONS:
        return value
    raise HyperparameterError(
        f"normalize_advantage must be True (= 'shared'), False, 'shared' or 'per_agent', got {value!r}. 'shared' "
        "divides every agent's advantages by one standard deviation pooled over the agents (keeps the average-return "
        "objective); 'per_agent' by each agent's own (changes the objective when the agents' reward scales differ)."
    )


def _advantage_normalization(name: str, value: Any) -> None:
    if not isinstance(value, bool) and value not in ADVANTAGE_NORMALIZATIONS:
        raise HyperparameterError(
            f"{name} must be True (= 'shared'), False, 'shared' or 'per_agent', got {value!r} ('shared': one standard "
            "deviation pooled over the agents, which keeps the average-return objective; 'per_agent': each agent's own)."
        )


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or value not in choices:
            raise HyperparameterError(f"unknown {name} {value!r}: choose one of {choices}.")

    return check


def _interval(low: float, high: float, low_open: bool) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        inside = _is_real(value) and math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
        if not inside:
            bracket = "(" if low_open else "["
            raise HyperparameterError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}.")

    return check


def _non_negative(name: str, value: Any) -> None:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise HyperparameterError(f"{name} must be a finite number >= 0, got {value!r}.")


def _aggregator(name: str, value: Any) -> None:
    if not callable(value) and (not isinstance(value, str) or value not in AGGREGATOR_NAMES):
        raise HyperparameterError(
            f"unknown {name} {value!r}: choose one of {AGGREGATOR_NAMES} or pass a callable (n, p) -> (p,)."
        )


def _anchor_batches(name: str, value: Any) -> None:
    if value != "auto":
        try:
            positive_int(name, value)
        except ValueError:
            raise HyperparameterError(f"{name} must be 'auto' or a positive integer, got {value!r}.") from None


def resolve_anchor_batches(anchor_batches: int | str, local_steps: int, correction: bool) -> int:
    """
    The number of batches averaged into each anchor.

    ``"auto"`` (the default) is ``k = clip(round((H / 10)²), 1, H)`` with the correction. The anchor's noise (standard
    deviation ``σ/√k``) is frozen for the round and pushes each agent coherently by about ``η H σ / √k``; ``k ∝ H²``
    keeps that push at its size for ``H = 10`` with one batch. So: the paper's single batch up to ``H = 12``, 4 at
    ``H = 20``, 25 at ``H = 50``, capped at ``H`` (the anchor never costs more env steps than the local steps). The
    choice was measured in ``docs/benchmarks/noise_correction.md`` (``H // 5`` batches, the previous rule, left one point-mass
    seed in three collapsing at ``H = 50``). Without the correction (FedAvg-PG) the anchor only serves as the first
    local step: one batch.

    :param anchor_batches: ``"auto"`` or a positive integer (used as given)
    :param local_steps: ``H``
    :param correction: Fast-FedPG (``True``) or FedAvg-PG
    :return: the number of anchor batches
    """
    if anchor_batches != "auto":
        return int(anchor_batches)
    if not correction:
        return 1
    return min(local_steps, max(1, (local_steps * local_steps + 50) // 100))


def _mapping_or_none(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise HyperparameterError(f"{name} must be a dict of keyword arguments or None, got {type(value).__name__}.")


class Hyperparams:
    """Base of the hyperparameter dataclasses: validation on construction, names, defaults, docs, partial checks."""

    if TYPE_CHECKING:  # every subclass is a dataclass (what ``dataclasses.fields`` needs)
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __post_init__(self) -> None:
        for f in fields(self):
            f.metadata["check"](f.name, getattr(self, f.name))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """:return: the hyperparameters' names, in definition order"""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """:return: name → default"""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def docs(cls) -> dict[str, str]:
        """:return: name → one-line documentation"""
        return {f.name: f.metadata["doc"] for f in fields(cls)}

    @classmethod
    def check(cls, **values: Any) -> None:
        """
        Validate some hyperparameters (the others are not looked at).

        :param values: name → value
        :raises HyperparameterError: naming the first invalid field, what it must be and what was given
        :raises TypeError: for an unknown name
        """
        by_name = {f.name: f for f in fields(cls)}
        for name, value in values.items():
            if name not in by_name:
                raise TypeError(f"unknown hyperparameter {name!r}; known: {sorted(by_name)}")
            by_name[name].metadata["check"](name, value)

    @classmethod
    def from_object(cls, obj: Any) -> Hyperparams:
        """
        Read (and so validate) the hyperparameters stored as attributes of ``obj`` (a model).

        :param obj: an object with one attribute per hyperparameter
        :return: the validated hyperparameters
        """
        defaults = cls.defaults()  # models saved before a hyperparameter existed lack its attribute
        return cls(**{name: getattr(obj, name, defaults[name]) for name in cls.names()})


def _hp(default: Any, check: Callable[[str, Any], None], doc: str) -> Any:
    # Defaults are immutable (numbers, strings, None), so sharing them between instances is safe.
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass
class FedPGHyperparams(Hyperparams):
    """
    Hyperparameters of :class:`~sb3_fedpg.FederatedPG` (each field's ``metadata["doc"]`` documents it;
    ``metadata["check"]`` validates it). Building an instance validates every field.
    """

    n_agents: int | None = _hp(None, _optional_positive_int, "Number of agents N; None takes it from a federated env (else 1)")
    learning_rate: Any = _hp(0.05, _learning_rate, "Local step size η (float or schedule of the remaining progress)")  # noqa: RUF009
    local_steps: int = _hp(4, positive_int, "Local steps H per communication round")
    n_steps: int = _hp(64, positive_int, "Steps per trajectory segment of one gradient batch (the truncation K)")
    server_learning_rate: float = _hp(1.0, positive_float, "Server step size η_g on the aggregated parameter change")
    gamma: float = _hp(0.99, _interval(0.0, 1.0, low_open=True), "Discount factor, in (0, 1]")
    gae_lambda: float = _hp(0.95, _interval(0.0, 1.0, low_open=False), "GAE λ, in [0, 1] (estimator='gae')")
    estimator: str = _hp("gae", _one_of(ESTIMATORS), f"Local gradient estimator, one of {ESTIMATORS}")
    baseline: str = _hp("none", _one_of(BASELINES), f"Baseline of gpomdp/reinforce, one of {BASELINES}")
    correction: bool = _hp(True, _boolean, "Fast-FedPG's drift correction; False gives FedAvg-PG")
    variance_control: str = _hp("none", _one_of(VARIANCE_CONTROLS), f"Noise control of the correction, {VARIANCE_CONTROLS}")
    anchor_batches: int | str = _hp(
        "auto", _anchor_batches, "Batches per anchor, or 'auto' ((H/10)² with correction, 1 to H; extra env steps count)"
    )
    reuse_anchor_batch: bool = _hp(True, _boolean, "Use the anchor batch for the first local step")
    normalize_advantage: bool | str = _hp(
        "shared", _advantage_normalization, "Centre each agent's weights, divide by a std pooled over agents ('shared')"
    )
    ent_coef: float = _hp(0.0, _non_negative, "Entropy bonus coefficient, >= 0")
    critic_learning_rate: float = _hp(1e-3, positive_float, "Adam step size of the local critics (estimator='gae')")
    local_optimizer: str = _hp("sgd", _one_of(LOCAL_OPTIMIZER_NAMES), f"Local update rule, one of {LOCAL_OPTIMIZER_NAMES}")
    max_grad_norm: float | None = _hp(None, _optional_positive_float, "Clip each agent's direction to this norm (None: off)")
    aggregator: Any = _hp("mean", _aggregator, f"Server reduction over agents: one of {AGGREGATOR_NAMES} or a callable")  # noqa: RUF009
    aggregator_kwargs: dict[str, Any] | None = _hp(None, _mapping_or_none, "Parameters of a named aggregator")  # noqa: RUF009
    participation: float = _hp(1.0, _interval(0.0, 1.0, low_open=True), "Fraction of agents sampled each round, in (0, 1]")
    n_envs_per_agent: int = _hp(1, positive_int, "Sub-environments per agent M when env is an env id")


@dataclass
class FedA2CHyperparams(FedPGHyperparams):
    """
    Hyperparameters of :class:`~sb3_fedpg.FederatedA2C`: FederatedPG's, with SB3 A2C's defaults where A2C has the
    setting (its step size, 5-step rollouts, λ = 1, no advantage normalisation, gradient clipping at 0.5; the critic's
    step equal to the actor's, as A2C's one optimiser gives both). Its local optimiser (A2C's RMSprop) comes from
    ``use_rms_prop`` and ``policy_kwargs``, as in A2C.
    """

    learning_rate: Any = _hp(7e-4, _learning_rate, "Local step size η (float or schedule of the remaining progress)")  # noqa: RUF009
    n_steps: int = _hp(5, positive_int, "Steps per trajectory segment of one gradient batch (A2C's rollout length)")
    gae_lambda: float = _hp(1.0, _interval(0.0, 1.0, low_open=False), "GAE λ, in [0, 1] (1: A2C's n-step returns)")
    normalize_advantage: bool | str = _hp(
        False, _advantage_normalization, "Normalise advantages: False (A2C's default), 'shared' or 'per_agent'"
    )
    critic_learning_rate: float = _hp(7e-4, positive_float, "Step size of the local critics' optimiser")
    max_grad_norm: float | None = _hp(0.5, _optional_positive_float, "Clip each agent's direction to this norm (None: off)")


def _optional_clip(name: str, value: Any) -> None:
    # None (no clipping), a number > 0, or a schedule of the remaining progress.
    if value is not None and not callable(value):
        positive_float(name, value)


def _clip_range(name: str, value: Any) -> None:
    if not callable(value):
        positive_float(name, value)


@dataclass
class FedPPOHyperparams(Hyperparams):
    """
    Hyperparameters of :class:`~sb3_fedpg.FederatedPPO` (PPO's own names and defaults where they exist; each field's
    ``metadata["doc"]`` documents it). Building an instance validates every field.
    """

    n_agents: int | None = _hp(None, _optional_positive_int, "Number of agents N; None takes it from a federated env (else 1)")
    learning_rate: Any = _hp(3e-4, _learning_rate, "Adam step size of the local actor and critic updates (float or schedule)")  # noqa: RUF009
    n_steps: int = _hp(256, positive_int, "Steps per sub-environment in one round's rollout (per agent: n_steps × M samples)")
    batch_size: int = _hp(64, positive_int, "Minibatch size, per agent (all agents' minibatches run as one batched step)")
    n_epochs: int = _hp(10, positive_int, "Epochs over each agent's own rollout per round")
    gamma: float = _hp(0.99, _interval(0.0, 1.0, low_open=True), "Discount factor, in (0, 1]")
    gae_lambda: float = _hp(0.95, _interval(0.0, 1.0, low_open=False), "GAE λ, in [0, 1]")
    clip_range: Any = _hp(0.2, _clip_range, "PPO's clipping parameter (float or schedule)")  # noqa: RUF009
    clip_range_vf: Any = _hp(None, _optional_clip, "Clipping of the local critics' value updates (None: off)")  # noqa: RUF009
    normalize_advantage: bool | str = _hp(
        "shared", _advantage_normalization, "Centre each minibatch's advantages, divide by a std pooled over agents"
    )
    ent_coef: float = _hp(0.0, _non_negative, "Entropy bonus coefficient, >= 0")
    vf_coef: float = _hp(0.5, positive_float, "Weight of the value loss in each agent's critic update")
    max_grad_norm: float | None = _hp(
        0.5, _optional_positive_float, "Clip each agent's actor and critic gradients (None: off)"
    )
    target_kl: float | None = _hp(None, _optional_positive_float, "Stop an agent's epochs once its KL passes 1.5 × this")
    correction: bool | str = _hp(
        "surrogate",
        _ppo_correction,
        "Drift correction: False, 'surrogate' (inside the clipped surrogate) or 'linear' (= True, ⟨g − a_i, θ⟩ outside it)",
    )
    variance_control: str = _hp(
        "snr_damping", _one_of(PPO_VARIANCE_CONTROLS), f"Noise control of the correction, {PPO_VARIANCE_CONTROLS}"
    )
    server_learning_rate: float = _hp(1.0, positive_float, "Server step size η_g on the aggregated parameter change")
    aggregator: Any = _hp("mean", _aggregator, f"Server reduction over agents: one of {AGGREGATOR_NAMES} or a callable")  # noqa: RUF009
    aggregator_kwargs: dict[str, Any] | None = _hp(None, _mapping_or_none, "Parameters of a named aggregator")  # noqa: RUF009
    participation: float = _hp(1.0, _interval(0.0, 1.0, low_open=True), "Fraction of agents sampled each round, in (0, 1]")
    n_envs_per_agent: int = _hp(1, positive_int, "Sub-environments per agent M when env is an env id")


def _momentum_coef(name: str, value: Any) -> None:
    if not _is_real(value) or not math.isfinite(value) or not 0 < value <= 1:
        raise HyperparameterError(
            f"{name} must be in (0, 1], got {value!r} (β = 1 is FedAvg-PG; β = 0 would never forget the first "
            "momentum and is refused)."
        )


def _max_importance_weight(name: str, value: Any) -> None:
    if value is not None and (not _is_real(value) or not math.isfinite(value) or value < 1):
        raise HyperparameterError(
            f"{name} must be None (untruncated, the paper's weights) or a number >= 1 (a truncation below 1 would cut "
            f"even the weights of unchanged policies), got {value!r}."
        )


@dataclass
class FedSVRPGMHyperparams(Hyperparams):
    """
    Hyperparameters of :class:`~sb3_fedpg.FederatedSVRPGM` (FedSVRPG-M, Wang et al., ICML 2024; each field's
    ``metadata["doc"]`` documents it). Building an instance validates every field. The defaults ``β = 0.5``,
    ``η = 0.05``, ``H = 10``, ``η_g = 1`` (the paper's global step ``λ = η H``) and the importance weights truncated at
    1.8 are those of the authors' experiment script; the estimator (GPOMDP with a mean baseline, normalised weights) is
    the closest of this library's to theirs (a baseline and centred advantages on whole trajectories).
    """

    n_agents: int | None = _hp(None, _optional_positive_int, "Number of agents N; None takes it from a federated env (else 1)")
    learning_rate: Any = _hp(0.05, _learning_rate, "Local step size η (float or schedule of the remaining progress)")  # noqa: RUF009
    local_steps: int = _hp(10, positive_int, "Local steps H per communication round (the paper's K)")
    n_steps: int = _hp(64, positive_int, "Steps per trajectory segment of one gradient batch (the truncation K of gpomdp)")
    momentum_coef: float = _hp(0.5, _momentum_coef, "Momentum parameter β in (0, 1] of the local direction (1: FedAvg-PG)")
    max_importance_weight: float | None = _hp(
        1.8, _max_importance_weight, "Truncation (>= 1) of the importance weights; None: untruncated, the paper's"
    )
    server_learning_rate: float = _hp(1.0, positive_float, "Server step size η_g (the paper's global step λ = η_g η H)")
    gamma: float = _hp(0.99, _interval(0.0, 1.0, low_open=True), "Discount factor, in (0, 1]")
    gae_lambda: float = _hp(0.95, _interval(0.0, 1.0, low_open=False), "GAE λ, in [0, 1] (estimator='gae')")
    estimator: str = _hp("gpomdp", _one_of(ESTIMATORS), f"Local gradient estimator, one of {ESTIMATORS}")
    baseline: str = _hp("mean", _one_of(BASELINES), f"Baseline of gpomdp/reinforce, one of {BASELINES}")
    normalize_advantage: bool | str = _hp(
        "shared", _advantage_normalization, "Centre each agent's weights, divide by a std pooled over agents ('shared')"
    )
    ent_coef: float = _hp(0.0, _non_negative, "Entropy bonus coefficient, >= 0")
    critic_learning_rate: float = _hp(1e-3, positive_float, "Adam step size of the local critics (estimator='gae')")
    max_grad_norm: float | None = _hp(None, _optional_positive_float, "Clip each agent's direction u to this norm (None: off)")
    aggregator: Any = _hp("mean", _aggregator, f"Server reduction over agents: one of {AGGREGATOR_NAMES} or a callable")  # noqa: RUF009
    aggregator_kwargs: dict[str, Any] | None = _hp(None, _mapping_or_none, "Parameters of a named aggregator")  # noqa: RUF009
    participation: float = _hp(1.0, _interval(0.0, 1.0, low_open=True), "Fraction of agents sampled each round, in (0, 1]")
    n_envs_per_agent: int = _hp(1, positive_int, "Sub-environments per agent M when env is an env id")


def check_gsde_settings(use_sde: Any, sde_sample_freq: Any) -> None:
    """
    :param use_sde: use gSDE (a bool)
    :param sde_sample_freq: draw new exploration matrices every this many steps of a rollout (``> 0``), or only at
        the start of each rollout (``-1``, or any value ``<= 0``, as in SB3)
    :raises ValueError: for values of another type, and for ``sde_sample_freq`` without gSDE (it would be ignored)
    """
    if not isinstance(use_sde, bool):
        raise ValueError(f"use_sde must be True or False, got {use_sde!r}.")
    if isinstance(sde_sample_freq, bool) or not isinstance(sde_sample_freq, numbers.Integral):
        raise ValueError(f"sde_sample_freq must be an integer (-1: only at the start of a rollout), got {sde_sample_freq!r}.")
    if not use_sde and sde_sample_freq != -1:
        raise ValueError(
            f"sde_sample_freq={sde_sample_freq!r} only applies with gSDE: pass use_sde=True as well, or leave it at -1."
        )

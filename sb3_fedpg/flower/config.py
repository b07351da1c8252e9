"""
The Flower run configuration: kebab-case keys (``[tool.flwr.app.config]``) and their one
conversion to typed settings and SB3-style ``FederatedPG`` keyword arguments.

Only NumPy and the standard library are imported here, so that a SuperNode's ClientApp
process (started afresh for every message) pays for torch only when it needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sb3_fedpg import __version__
from sb3_fedpg.common.adversarial import FAULT_KINDS
from sb3_fedpg.common.hyperparams import (
    ADVANTAGE_NORMALIZATIONS,
    AGGREGATOR_NAMES,
    PPO_CORRECTIONS,
    FedPGHyperparams,
    FedPPOHyperparams,
    advantage_normalization,
    check_gsde_settings,
    ppo_correction_mode,
)

#: The FederatedPG hyperparameters a Flower run takes (kebab-case in the run config); their defaults
#: come from :class:`~sb3_fedpg.common.hyperparams.FedPGHyperparams`, the one definition.
ALGORITHM_KEYS = (
    "n_envs_per_agent",
    "learning_rate",
    "local_steps",
    "n_steps",
    "server_learning_rate",
    "gamma",
    "gae_lambda",
    "estimator",
    "baseline",
    "correction",
    "variance_control",
    "anchor_batches",
    "reuse_anchor_batch",
    "normalize_advantage",
    "ent_coef",
    "critic_learning_rate",
    "local_optimizer",
    "max_grad_norm",
)

#: The FederatedPPO hyperparameters a Flower run with ``algorithm = "fedppo"`` takes, as ``ppo-<name>`` keys with
#: FederatedPPO's own defaults (a separate namespace: PPO's Adam step size, rollout length and clipping defaults are
#: not FederatedPG's, and one key with two meanings would be a trap).
PPO_KEYS = (
    "learning_rate",
    "n_steps",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "clip_range",
    "clip_range_vf",
    "normalize_advantage",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "correction",
    "variance_control",
    "server_learning_rate",
)
#: What the agents run: FederatedPG's corrected gradient steps (Fast-FedPG / FedAvg-PG) or FederatedPPO's epochs.
ALGORITHMS = ("fedpg", "fedppo")
#: Optional numbers of the run config: 0 (or less) means "off" (TOML has no null).
_OPTIONAL_NUMBERS = (
    "max_update_norm",
    "max_grad_norm",
    "max_update_norm_ratio",
    "ppo_clip_range_vf",
    "ppo_max_grad_norm",
    "ppo_target_kl",
)


def _toml_default(value: Any) -> bool | int | float | str:
    # TOML has no null: "no limit" is 0.0 in the run config.
    return 0.0 if value is None else value


#: Every key the app understands, with its default. ``flower_app/pyproject.toml`` repeats these
#: (Flower only accepts ``--run-config`` overrides of keys declared there); a test checks they agree.
DEFAULT_RUN_CONFIG: dict[str, bool | int | float | str] = {
    # what the agents learn: "neural" (FederatedPG on a heterogeneous Gymnasium family) or
    # "tabular" (exact softmax policy gradients on a Garnet MDP, deterministic)
    "task": "neural",
    # the sb3-fedpg version the app was packaged for: every process of a run refuses another installed version
    "sb3-fedpg-version": __version__,
    "num-rounds": 5,
    "seed": 0,
    # participation and faults
    "num-agents": 0,
    "min-agents": 1,
    "wait-for-agents-s": 120.0,
    "phase-timeout-s": 300.0,
    # seconds between the server's pulls of the replies of a phase
    "reply-poll-s": 0.05,
    "max-update-norm": 1e6,
    # relative bound: a reply whose norm exceeds this many times the median norm of its phase's replies is
    # rejected (needs >= 3 replies; 0 disables)
    "max-update-norm-ratio": 10.0,
    # server reduction over agents, by name (see sb3_fedpg.common.aggregators.AGGREGATORS)
    "aggregator": "mean",
    "max-skipped-rounds": 3,
    # federated evaluation: every this many rounds (0: never) each agent returns the global policy's return under its
    # own reward over eval-episodes deterministic episodes per sub-environment (tabular: the exact J_i)
    "eval-every": 0,
    "eval-episodes": 1,
    # outputs
    "output-dir": "runs/flower",
    "resume": False,
    "log-formats": "csv",
    # W&B project of the ServerApp's metrics when log-formats names "wandb" (WANDB_MODE=offline works without network)
    "wandb-project": "sb3-fedpg",
    # FederatedPG hyperparameters (same names as its constructor, kebab-case; defaults from FedPGHyperparams)
    "env-id": "sb3_fedpg/HeteroCartPole-v0",
    "heterogeneity": 1.0,
    **{name.replace("_", "-"): _toml_default(FedPGHyperparams.defaults()[name]) for name in ALGORITHM_KEYS},
    "net-arch": "64,64",
    # federated observation normalisation (sb3_fedpg.common.vec_normalize.FederatedVecNormalize): each agent keeps its
    # own statistics and sends what it saw since the last merge with its phase-2 reply; the server merges them exactly
    "normalize-obs": False,
    "clip-obs": 10.0,
    # gSDE (both algorithms' use_sde / sde_sample_freq): state-dependent exploration for Box actions, each agent's
    # sub-environments holding their own exploration matrices, log_std federated with the rest of the actor
    "use-sde": False,
    "sde-sample-freq": -1,
    # "fedpg" (the keys above) or "fedppo": FederatedPPO with the ppo-* keys below (FederatedPPO's names and defaults)
    "algorithm": "fedpg",
    **{f"ppo-{name.replace('_', '-')}": _toml_default(FedPPOHyperparams.defaults()[name]) for name in PPO_KEYS},
    # tabular task (Garnet MDP, see sb3_fedpg.tabular.garnet)
    "tabular-n-states": 10,
    "tabular-n-actions": 4,
    "tabular-branching": 3,
    "tabular-gamma": 0.9,
    "tabular-tau": 0.0,
    # fault injection, for tests and demonstrations: agent ``fault-agent`` corrupts its reply
    "fault-agent": -1,
    "fault-kind": "none",
    "fault-phase": "local",
    "fault-rounds": "",
}

TASKS = ("neural", "tabular")
#: Faults a Flower agent can be told to show: a corrupted reply (:data:`FAULT_KINDS`) or ``crash``: the process
#: that computes the agent (its worker, or the ClientApp) kills itself with SIGKILL before replying.
FLOWER_FAULT_KINDS = (*FAULT_KINDS, "crash")
FAULT_PHASES = ("grad", "local")


@dataclass(frozen=True)
class FlowerRunConfig:
    """
    The typed run configuration (see :data:`DEFAULT_RUN_CONFIG` for the kebab-case keys).

    :param task: ``"neural"`` or ``"tabular"``
    :param sb3_fedpg_version: the sb3-fedpg version the app package pins (must be the installed one)
    :param num_rounds: communication rounds ``T``
    :param seed: seed of the initial policy, the agents' environments and the Garnet MDP
    :param num_agents: agents to wait for before round 1 (``0``: ``min_agents``)
    :param min_agents: fewest agents whose replies make a phase valid; with fewer the round is skipped
    :param wait_for_agents_s: how long to wait at start for ``max(num_agents, min_agents)`` agents
    :param phase_timeout_s: how long the server waits for the replies of one phase
    :param reply_poll_s: seconds between the server's pulls of a phase's replies
    :param max_update_norm: replies (anchors, parameter changes) with a larger norm are rejected
    :param max_update_norm_ratio: replies whose norm exceeds this many times the median norm of the phase's replies
        are rejected (with at least 3 replies; ``None``: no relative bound)
    :param aggregator: the server's reduction over agents for anchors and parameter changes: ``mean`` or a
        Byzantine-robust rule (``median``, ``trimmed_mean``, ``norm_clipped_mean``, ``geometric_median``)
    :param max_skipped_rounds: stop the run after this many consecutive skipped rounds
    :param eval_every: federated evaluation of the global policy every this many rounds (``0``: never)
    :param eval_episodes: deterministic evaluation episodes per sub-environment (neural task)
    :param output_dir: where the server writes the model, the checkpoint and the logs
    :param resume: continue from ``output_dir``'s checkpoint if there is one
    :param log_formats: SB3 logger formats, comma-separated (``csv``, ``tensorboard``, ``stdout``, ``log``, ``json``), and
        ``wandb`` (the ServerApp's metrics to Weights & Biases)
    :param wandb_project: the W&B project (with ``wandb`` in ``log_formats``)
    :param env_id: Gymnasium family id (neural task)
    :param heterogeneity: the family's (or Garnet's) heterogeneity knob
    :param n_envs_per_agent: sub-environments per agent (neural task)
    :param learning_rate: local step size ``η``
    :param local_steps: ``H``
    :param n_steps: steps per trajectory segment of one batch (neural task)
    :param server_learning_rate: ``η_g``
    :param gamma: discount factor (neural task)
    :param gae_lambda: GAE λ
    :param estimator: ``gae``, ``gpomdp`` or ``reinforce``
    :param baseline: baseline of ``gpomdp``/``reinforce``
    :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
    :param variance_control: noise control of the correction (``none``, ``control_variate``, ``snr_damping``, ``filtered``)
    :param anchor_batches: batches averaged into each anchor, or ``auto`` (``(H / 10)²``, 1 to ``H``, with correction)
    :param reuse_anchor_batch: reuse the anchor batch for the first local step
    :param normalize_advantage: ``"shared"`` (one scale pooled over the agents from the moments they send with
        their anchors: keeps the average-return objective), ``"per_agent"`` (each batch its own) or ``false``
    :param ent_coef: entropy bonus
    :param critic_learning_rate: Adam step size of each agent's local critic
    :param local_optimizer: ``sgd`` or ``adam``
    :param max_grad_norm: clip each agent's corrected direction (``None``: no clipping)
    :param net_arch: hidden layer sizes of the policy
    :param normalize_obs: federated observation normalisation (neural task): every agent normalises with its own
        running statistics; the server merges the agents' new statistics exactly every round and sends them back
    :param clip_obs: max absolute value of a normalised observation (with ``normalize_obs``)
    :param use_sde: gSDE for both algorithms (``use_sde=True``; neural task, ``Box`` actions)
    :param sde_sample_freq: with gSDE, new exploration matrices every this many steps of a rollout (``-1``: at the
        start of each rollout only)
    :param algorithm: ``fedpg`` (FederatedPG, the keys above) or ``fedppo`` (FederatedPPO, the ``ppo_*`` keys)
    :param ppo_learning_rate: FederatedPPO's Adam step size of the local actor and critic updates
    :param ppo_n_steps: FederatedPPO's rollout length per sub-environment and round
    :param ppo_batch_size: FederatedPPO's minibatch size per agent
    :param ppo_n_epochs: FederatedPPO's epochs over each agent's rollout per round
    :param ppo_gamma: FederatedPPO's discount factor
    :param ppo_gae_lambda: FederatedPPO's GAE λ
    :param ppo_clip_range: PPO's clipping parameter
    :param ppo_clip_range_vf: clipping of the local critics' value updates (``None``: off)
    :param ppo_normalize_advantage: FederatedPPO's advantage normalisation (``"shared"``, ``"per_agent"``, ``false``)
    :param ppo_ent_coef: FederatedPPO's entropy bonus
    :param ppo_vf_coef: weight of the value loss
    :param ppo_max_grad_norm: clip each agent's actor and critic gradients (``None``: off)
    :param ppo_target_kl: stop an agent's epochs once its KL passes ``1.5 × target_kl`` (``None``: off)
    :param ppo_correction: FederatedPPO's drift correction: ``false``, ``"surrogate"`` (inside the clipped
        surrogate) or ``"linear"`` (``true``: ``⟨g − a_i, θ⟩`` added to each step's gradient)
    :param ppo_variance_control: noise control of FederatedPPO's correction (``none`` or ``snr_damping``)
    :param ppo_server_learning_rate: FederatedPPO's server step size ``η_g``
    :param tabular_n_states: Garnet ``S``
    :param tabular_n_actions: Garnet ``A``
    :param tabular_branching: Garnet branching factor
    :param tabular_gamma: Garnet discount factor
    :param tabular_tau: entropy temperature of the tabular objective
    :param fault_agent: partition id of the agent that corrupts its replies (``-1``: none)
    :param fault_kind: ``none``, ``nan``, ``shape``, ``huge`` or ``crash`` (see :data:`FLOWER_FAULT_KINDS`)
    :param fault_phase: ``grad`` (the anchor) or ``local`` (the parameter change)
    :param fault_rounds: rounds (1-based) in which the fault happens (empty: every round)
    """

    task: str = "neural"
    sb3_fedpg_version: str = __version__
    num_rounds: int = 5
    seed: int = 0
    num_agents: int = 0
    min_agents: int = 1
    wait_for_agents_s: float = 120.0
    phase_timeout_s: float = 300.0
    reply_poll_s: float = 0.05
    max_update_norm: float | None = 1e6
    max_update_norm_ratio: float | None = 10.0
    aggregator: str = "mean"
    max_skipped_rounds: int = 3
    eval_every: int = 0
    eval_episodes: int = 1
    output_dir: str = "runs/flower"
    resume: bool = False
    log_formats: tuple[str, ...] = ("csv",)
    wandb_project: str = "sb3-fedpg"
    env_id: str = "sb3_fedpg/HeteroCartPole-v0"
    heterogeneity: float = 1.0
    n_envs_per_agent: int = 1
    learning_rate: float = 0.05
    local_steps: int = 4
    n_steps: int = 64
    server_learning_rate: float = 1.0
    gamma: float = 0.99
    gae_lambda: float = 0.95
    estimator: str = "gae"
    baseline: str = "none"
    correction: bool = True
    variance_control: str = "none"
    anchor_batches: int | str = "auto"
    reuse_anchor_batch: bool = True
    normalize_advantage: bool | str = "shared"
    ent_coef: float = 0.0
    critic_learning_rate: float = 1e-3
    local_optimizer: str = "sgd"
    max_grad_norm: float | None = None
    net_arch: tuple[int, ...] = (64, 64)
    normalize_obs: bool = False
    clip_obs: float = 10.0
    use_sde: bool = False
    sde_sample_freq: int = -1
    algorithm: str = "fedpg"
    ppo_learning_rate: float = 3e-4
    ppo_n_steps: int = 256
    ppo_batch_size: int = 64
    ppo_n_epochs: int = 10
    ppo_gamma: float = 0.99
    ppo_gae_lambda: float = 0.95
    ppo_clip_range: float = 0.2
    ppo_clip_range_vf: float | None = None
    ppo_normalize_advantage: bool | str = "shared"
    ppo_ent_coef: float = 0.0
    ppo_vf_coef: float = 0.5
    ppo_max_grad_norm: float | None = 0.5
    ppo_target_kl: float | None = None
    ppo_correction: bool | str = "surrogate"
    ppo_variance_control: str = "snr_damping"
    ppo_server_learning_rate: float = 1.0
    tabular_n_states: int = 10
    tabular_n_actions: int = 4
    tabular_branching: int = 3
    tabular_gamma: float = 0.9
    tabular_tau: float = 0.0
    fault_agent: int = -1
    fault_kind: str = "none"
    fault_phase: str = "local"
    fault_rounds: tuple[int, ...] = field(default_factory=tuple)

    @property
    def agent_learning_rate(self) -> float:
        """The agents' local step size (FederatedPG's ``η`` or FederatedPPO's Adam step size)."""
        return self.ppo_learning_rate if self.algorithm == "fedppo" else self.learning_rate

    @property
    def server_step_size(self) -> float:
        """The server step size ``η_g`` of the chosen algorithm."""
        return self.ppo_server_learning_rate if self.algorithm == "fedppo" else self.server_learning_rate

    @property
    def uses_correction(self) -> bool:
        """Whether the agents apply the drift correction."""
        return ppo_correction_mode(self.ppo_correction) is not None if self.algorithm == "fedppo" else self.correction

    @property
    def shared_normalization(self) -> bool:
        """Whether the agents send their anchors in parts for the server's shared advantage scale."""
        value = self.ppo_normalize_advantage if self.algorithm == "fedppo" else self.normalize_advantage
        return self.task == "neural" and advantage_normalization(value) == "shared"

    def anchor_length(self, n_params: int) -> int:
        """
        :param n_params: the policy's parameters ``p``
        :return: the length of an anchor reply: ``2p`` when it carries the policy and entropy parts separately
            (shared normalisation with an entropy bonus, :class:`~sb3_fedpg.common.fedmath.ScaledAnchors`), else ``p``
        """
        ent_coef = self.ppo_ent_coef if self.algorithm == "fedppo" else self.ent_coef
        return 2 * n_params if self.shared_normalization and ent_coef else n_params

    def algorithm_kwargs(self) -> dict[str, Any]:
        """
        :return: keyword arguments of :class:`~sb3_fedpg.FederatedPG` or, with ``algorithm="fedppo"``,
            :class:`~sb3_fedpg.FederatedPPO` (besides policy, env, n_agents, seed)
        """
        if self.algorithm == "fedppo":
            kwargs = {name: getattr(self, f"ppo_{name}") for name in PPO_KEYS}
            return {**kwargs, **self.exploration_kwargs(), "policy_kwargs": {"net_arch": list(self.net_arch)}}
        return dict(
            learning_rate=self.learning_rate,
            local_steps=self.local_steps,
            n_steps=self.n_steps,
            server_learning_rate=self.server_learning_rate,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            estimator=self.estimator,
            baseline=self.baseline,
            correction=self.correction,
            variance_control=self.variance_control,
            anchor_batches=self.anchor_batches,
            reuse_anchor_batch=self.reuse_anchor_batch,
            normalize_advantage=self.normalize_advantage,
            ent_coef=self.ent_coef,
            critic_learning_rate=self.critic_learning_rate,
            local_optimizer=self.local_optimizer,
            max_grad_norm=self.max_grad_norm,
            policy_kwargs={"net_arch": list(self.net_arch)},
            **self.exploration_kwargs(),
        )

    def exploration_kwargs(self) -> dict[str, Any]:
        """:return: gSDE's arguments, the same for both algorithms (none without gSDE: the constructors' defaults)"""
        return {"use_sde": True, "sde_sample_freq": self.sde_sample_freq} if self.use_sde else {}

    def env_kwargs(self) -> dict[str, Any]:
        """:return: the family parameters of the neural task"""
        return {"heterogeneity": self.heterogeneity}

    def fault_applies(self, agent: int, phase: str, server_round: int) -> bool:
        """
        :param agent: the agent's partition id
        :param phase: ``grad`` or ``local``
        :param server_round: the current round (1-based)
        :return: whether this agent corrupts this reply
        """
        return (
            self.fault_kind != "none"
            and agent == self.fault_agent
            and phase == self.fault_phase
            and (not self.fault_rounds or server_round in self.fault_rounds)
        )


def _int_list(value: Any, key: str) -> tuple[int, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"run config {key!r} must be comma-separated integers, got {value!r}")
        numbers: tuple[int, ...] = (int(value),)
    elif isinstance(value, str):
        try:
            numbers = tuple(int(part) for part in value.replace(";", ",").split(",") if part.strip())
        except ValueError as error:
            raise ValueError(f"run config {key!r} must be comma-separated integers, got {value!r}") from error
    else:
        raise ValueError(f"run config {key!r} must be comma-separated integers, got {type(value).__name__} {value!r}")
    if any(not 1 <= number <= 1 << 20 for number in numbers):
        raise ValueError(f"run config {key!r} must list integers in [1, {1 << 20}], got {value!r}")
    return numbers


#: SB3 logger formats a run config may name (``log-formats``).
LOG_FORMATS = ("stdout", "log", "json", "csv", "tensorboard", "wandb")


def parse_run_config(run_config: Mapping[str, Any] | None = None, **overrides: Any) -> FlowerRunConfig:
    """
    The one place where the kebab-case run config becomes typed settings.

    Missing keys take :data:`DEFAULT_RUN_CONFIG`'s values; unknown keys and invalid values
    raise ``ValueError`` (hyperparameters are validated again by ``FederatedPG`` itself).

    :param run_config: Flower's ``context.run_config`` (kebab-case)
    :param overrides: more kebab-case entries given as Python keywords with ``_`` for ``-``
    :return: the typed configuration
    """
    merged: dict[str, Any] = dict(DEFAULT_RUN_CONFIG)
    given = {**dict(run_config or {}), **{k.replace("_", "-"): v for k, v in overrides.items()}}
    unknown = sorted(set(given) - set(DEFAULT_RUN_CONFIG))
    if unknown:
        raise ValueError(f"unknown Flower run config key(s) {unknown}; known keys: {sorted(DEFAULT_RUN_CONFIG)}")
    merged.update(given)

    def typed(key: str, kind: type) -> Any:
        value = merged[key]
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"run config {key!r} must be true or false, got {value!r}")
                return value.lower() in ("true", "1")
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise ValueError(f"run config {key!r} must be true or false, got {value!r}")
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError(f"run config {key!r} must be int, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ValueError(f"run config {key!r} must be str, got {type(value).__name__} {value!r}")
        if kind is not str and not isinstance(value, int | float | str):
            raise ValueError(f"run config {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"run config {key!r} must be {kind.__name__}, got {value!r}") from error

    values: dict[str, Any] = {}
    for f in fields(FlowerRunConfig):
        key = f.name.replace("_", "-")
        if f.name in _OPTIONAL_NUMBERS:
            # 0 (or less) means "no limit": TOML has no null
            number = typed(key, float)
            if number != number or abs(number) == float("inf"):
                raise ValueError(f"run config {key!r} must be a finite number (0 for no limit), got {number!r}")
            if f.name == "max_update_norm_ratio" and 0 < number < 1:
                raise ValueError(f"run config {key!r} must be >= 1 (or 0 for no relative bound), got {number!r}")
            values[f.name] = number if number > 0 else None
        elif f.name == "log_formats":
            text = merged[key]
            if not isinstance(text, str):
                raise ValueError(f"run config {key!r} must be a comma-separated string, got {text!r}")
            values[f.name] = tuple(part.strip() for part in text.split(",") if part.strip())
            unknown_formats = sorted(set(values[f.name]) - set(LOG_FORMATS))
            if unknown_formats:
                raise ValueError(f"run config {key!r}: unknown format(s) {unknown_formats}; use some of {LOG_FORMATS}")
        elif f.name == "anchor_batches":
            values[f.name] = "auto" if merged[key] == "auto" else typed(key, int)
        elif f.name == "ppo_correction":  # FederatedPPO's correction: a form's name, or a boolean (true = "linear")
            try:
                values[f.name] = merged[key] if merged[key] in ("none", *PPO_CORRECTIONS) else typed(key, bool)
            except ValueError:
                raise ValueError(
                    f'run config {key!r} must be false, true (= linear), "linear" or "surrogate", got {merged[key]!r}'
                ) from None
        elif f.name in ("normalize_advantage", "ppo_normalize_advantage"):  # a mode's name, or false (true = shared)
            try:
                values[f.name] = merged[key] if merged[key] in ADVANTAGE_NORMALIZATIONS else typed(key, bool)
            except ValueError:
                raise ValueError(
                    f'run config {key!r} must be "shared", "per_agent", true (= shared) or false, got {merged[key]!r}'
                ) from None
        elif f.name in ("net_arch", "fault_rounds"):
            values[f.name] = _int_list(merged[key], key)
        else:
            kind = {"bool": bool, "int": int, "float": float, "str": str}[str(f.type).split(" ")[0]]
            values[f.name] = typed(key, kind)
    config = FlowerRunConfig(**values)
    if config.algorithm not in ALGORITHMS:
        raise ValueError(f"run config 'algorithm' must be one of {ALGORITHMS}, got {config.algorithm!r}")
    for name in ALGORITHM_KEYS:  # FederatedPG's own checks, the same as its constructor's
        try:
            FedPGHyperparams.check(**{name: getattr(config, name)})
        except ValueError as error:
            raise ValueError(f"run config {name.replace('_', '-')!r}: {error}") from error
    for name in PPO_KEYS:  # FederatedPPO's
        try:
            FedPPOHyperparams.check(**{name: getattr(config, f"ppo_{name}")})
        except ValueError as error:
            raise ValueError(f"run config 'ppo-{name.replace('_', '-')}': {error}") from error
    if config.aggregator not in AGGREGATOR_NAMES:
        raise ValueError(f"run config 'aggregator' must be one of {AGGREGATOR_NAMES}, got {config.aggregator!r}")
    if config.sb3_fedpg_version != __version__:
        raise ValueError(
            f"the Flower app was packaged for sb3-fedpg {config.sb3_fedpg_version} but this machine runs {__version__}: "
            f"install sb3-fedpg=={config.sb3_fedpg_version} here (or rebuild the app with this version)"
        )
    if config.task not in TASKS:
        raise ValueError(f"run config 'task' must be one of {TASKS}, got {config.task!r}")
    if config.task == "tabular" and config.algorithm != "fedpg":
        raise ValueError('the tabular task runs exact gradient steps: use algorithm = "fedpg" with task = "tabular"')
    if config.fault_kind not in FLOWER_FAULT_KINDS:
        raise ValueError(f"run config 'fault-kind' must be one of {FLOWER_FAULT_KINDS}, got {config.fault_kind!r}")
    if config.fault_phase not in FAULT_PHASES:
        raise ValueError(f"run config 'fault-phase' must be one of {FAULT_PHASES}, got {config.fault_phase!r}")
    for name in ("num_rounds", "min_agents", "local_steps", "max_skipped_rounds", "eval_episodes"):
        if getattr(config, name) < 1:
            raise ValueError(f"run config {name.replace('_', '-')!r} must be >= 1, got {getattr(config, name)}")
    for name in ("phase_timeout_s", "reply_poll_s", "wait_for_agents_s", "learning_rate", "server_learning_rate"):
        if not getattr(config, name) > 0:
            raise ValueError(f"run config {name.replace('_', '-')!r} must be > 0, got {getattr(config, name)}")
    if config.eval_every < 0:
        raise ValueError(f"run config 'eval-every' must be >= 0 (0: no evaluation), got {config.eval_every}")
    if config.num_agents < 0:
        raise ValueError(f"run config 'num-agents' must be >= 0, got {config.num_agents}")
    if config.normalize_obs and config.task != "neural":
        raise ValueError("run config 'normalize-obs' is for the neural task (the tabular task has no observations)")
    if config.normalize_obs and config.resume:
        raise ValueError(
            "run config 'normalize-obs' cannot be combined with 'resume': the server's checkpoint does not hold the "
            "merged observation statistics, so a resumed run would normalise differently"
        )
    if not config.clip_obs > 0:
        raise ValueError(f"run config 'clip-obs' must be > 0, got {config.clip_obs}")
    if not config.net_arch:
        raise ValueError("run config 'net-arch' must list at least one layer size, e.g. \"64,64\"")
    try:
        check_gsde_settings(config.use_sde, config.sde_sample_freq)
    except ValueError as error:
        raise ValueError(f"run config 'use-sde' / 'sde-sample-freq': {error}") from error
    if config.use_sde and config.task != "neural":
        raise ValueError("run config 'use-sde' is for the neural task (the tabular task's policy is an exact softmax)")
    return config

"""
The machinery every federated algorithm shares (the ``OnPolicyAlgorithm`` of this library).

:class:`FederatedAlgorithm` is an SB3 ``BaseAlgorithm`` over a federated ``VecEnv`` whose
``N·M`` sub-environments are split into contiguous blocks, one per agent. It collects batches
for all agents at once under per-agent parameters (:meth:`~FederatedAlgorithm.collect_batch`,
with SB3's callback events), runs the ``learn`` loop one communication round at a time, logs
the SB3 way, samples participants and holds the global (federated) parameters. Subclasses
implement :meth:`~FederatedAlgorithm.train` — one round — on top of
:func:`sb3_fedpg.common.fedmath.run_round`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import secrets
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.utils import FloatSchedule, check_for_correct_spaces, is_vectorized_observation, safe_mean
from stable_baselines3.common.vec_env import VecEnv

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import ACTION_SPACES, GSDE_BOX_ONLY, BatchedActor, StackedCritics
from sb3_fedpg.common.callbacks import fire_round_end
from sb3_fedpg.common.estimators import Estimator, critic_advantages
from sb3_fedpg.common.federated_vec_env import (
    FederatedVecEnv,
    ObservationBoundsWarning,
    check_observations,
    check_rewards,
    make_federated_vec_env,
    observations_far_out_of_bounds,
)
from sb3_fedpg.common.hyperparams import check_gsde_settings
from sb3_fedpg.common.observations import VecObs, stack_observations
from sb3_fedpg.common.persistence import FederatedPersistenceMixin
from sb3_fedpg.common.policies import NO_GLOBAL_CRITIC, FederatedPolicyBase
from sb3_fedpg.common.rollout_buffer import check_buffer_class, fill_rollout_buffer, make_rollout_buffer
from sb3_fedpg.common.torch_optimizer import check_optimizer, requested_optimizer

SelfFederatedAlgorithm = TypeVar("SelfFederatedAlgorithm", bound="FederatedAlgorithm")


#: Policy keyword arguments that only shape gSDE's noise: refused without ``use_sde=True`` (SB3 ignores them there).
GSDE_ONLY_POLICY_KWARGS = ("full_std", "use_expln")


class SquashWithoutGSDEError(ValueError, AssertionError):
    """
    ``policy_kwargs['squash_output']=True`` without gSDE: refused before anything is built. An ``AssertionError`` as
    well, the error SB3's policy raises for it (``test_sde.py::test_only_sde_squashed``), and a ``ValueError`` as every
    other refused argument here.
    """


def check_policy_kwargs(
    policy_kwargs: dict[str, Any] | None, algo: str, optimizer_refusal: str | None = None, use_sde: bool = False
) -> None:
    """
    Refuse the ``policy_kwargs`` a federated algorithm cannot honour (every other key of SB3's
    ``ActorCriticPolicy`` is honoured; see ``tests/common/test_policy_kwargs.py``).

    :param policy_kwargs: the keyword arguments
    :param algo: the algorithm's name, for the message
    :param optimizer_refusal: why the algorithm cannot use ``optimizer_class`` / ``optimizer_kwargs`` as its agents'
        local optimiser (:attr:`FederatedAlgorithm.optimizer_refusal`); ``None``: it can, and they are checked
        (:func:`~sb3_fedpg.common.torch_optimizer.check_optimizer`)
    :param use_sde: the algorithm's ``use_sde`` (gSDE's own keys need it)
    :raises ValueError: naming the key, why and what to do instead
    """
    for key, value in (policy_kwargs or {}).items():
        if key == "use_sde" and bool(value) != bool(use_sde):
            raise ValueError(
                f"policy_kwargs['use_sde']={value!r} but {algo}(use_sde={use_sde!r}): the algorithm sets the policy's "
                "use_sde, as in SB3 (whose rollouts draw gSDE's exploration matrices). Pass use_sde to the algorithm."
            )
        if key in GSDE_ONLY_POLICY_KWARGS and not use_sde:
            raise ValueError(
                f"policy_kwargs[{key!r}] has no effect in {algo} without gSDE: it only shapes gSDE's noise. Pass "
                f"use_sde=True to use gSDE, or leave {key!r} out."
            )
        if key == "squash_output" and value and not use_sde:
            raise SquashWithoutGSDEError(
                f"policy_kwargs['squash_output']=True is only available when using gSDE (use_sde=True), as in SB3: the "
                f"Gaussian's actions of {algo} without gSDE are clipped to the action space, never squashed."
            )
    requested = requested_optimizer(policy_kwargs)
    if requested is None:
        return
    if optimizer_refusal is not None:
        key = "optimizer_class" if (policy_kwargs or {}).get("optimizer_class") is not None else "optimizer_kwargs"
        raise ValueError(f"policy_kwargs[{key!r}] is not supported by {algo}: {optimizer_refusal}")
    check_optimizer(*requested, algo)


#: Shown once per process (see :meth:`FederatedAlgorithm.learn`).
THREADS_HINT = (
    "Hint: torch is using {n} CPU threads. The federated algorithms' small batched networks usually run several "
    "times faster with one: call torch.set_num_threads(1) before training (the command-line trainer does; the "
    "library leaves this process-wide setting to you)."
)
_threads_hint_shown = False


class FederatedDifferenceWarning(UserWarning):
    """
    A deliberate difference from SB3's behaviour, met at this call (each kind is announced once per process; the list
    is in docs/migrating.md). Silence them all with ``warnings.simplefilter("ignore", FederatedDifferenceWarning)``.
    """


#: the kinds of :class:`FederatedDifferenceWarning` already shown in this process
_differences_announced: set[str] = set()


def announce_difference(kind: str, message: str, stacklevel: int = 3) -> None:
    """
    Warn about a deliberate difference from SB3, once per process and kind.

    :param kind: what differs (the key of the once-only memory)
    :param message: what happens, and how to get SB3's behaviour where there is a way
    :param stacklevel: as in :func:`warnings.warn`, counted from the caller of this function (3: the user's call of a
        public method that calls a base-class method that calls this)
    """
    if kind not in _differences_announced:
        _differences_announced.add(kind)
        warnings.warn(message, FederatedDifferenceWarning, stacklevel=stacklevel + 1)


class HomogeneousFamilyWarning(UserWarning):
    """A plain VecEnv of a heterogeneous family split between agents: every agent gets the same reward."""


def _warn_if_family_copies(env: Any, n_agents: int) -> None:
    """
    Warn when a plain ``VecEnv`` of a heterogeneous family (e.g. ``make_vec_env("sb3_fedpg/HeteroCartPole-v0")``) is
    split between agents: each copy is the family's agent 0, so the federation would have one reward, not ``N``.

    :param env: the plain VecEnv
    :param n_agents: the agents it is split between
    """
    from sb3_fedpg.envs.families import get_family

    try:
        ids = {getattr(spec, "id", None) for spec in env.get_attr("spec")}
    except Exception:  # a VecEnv that cannot answer: nothing to say
        return
    families = sorted(i for i in ids if isinstance(i, str) and get_family(i) is not None)
    if families:
        warnings.warn(
            f"the env is a plain VecEnv of the heterogeneous family {families[0]}: every copy is the family's agent 0, so "
            f"the {n_agents} agents would share one reward (a homogeneous federation). For {n_agents} agents with their "
            f"own rewards pass the id itself (FederatedPG('MlpPolicy', {families[0]!r}, n_agents={n_agents})) or "
            f"make_federated_vec_env({families[0]!r}, n_agents={n_agents}).",
            HomogeneousFamilyWarning,
            stacklevel=4,
        )


#: ids of the models whose learn() is running (one learn per model at a time, whatever the thread).
_models_learning: set[int] = set()
_models_learning_lock = threading.Lock()


@contextlib.contextmanager
def _learning(model: Any) -> Iterator[None]:
    """
    Hold ``model`` for one ``learn()``: a second concurrent ``learn()`` (another thread, or a callback calling
    ``learn``) is refused with a clear error instead of interleaving two rounds on the same agents' state.

    :param model: the model
    """
    with _models_learning_lock:
        if id(model) in _models_learning:
            raise RuntimeError(
                f"learn() is already running on this {type(model).__name__} (in another thread, or called from its own "
                "callback): a federated model trains one learn() at a time, since a round updates every agent's state. "
                "Train a separate model per thread (e.g. load a copy of the saved model), or wait for the first learn()."
            )
        _models_learning.add(id(model))
    try:
        yield
    finally:
        with _models_learning_lock:
            _models_learning.discard(id(model))


def _hint_torch_threads(device: th.device, verbose: int) -> None:
    global _threads_hint_shown
    if verbose >= 1 and device.type == "cpu" and th.get_num_threads() > 1 and not _threads_hint_shown:
        _threads_hint_shown = True
        print(THREADS_HINT.format(n=th.get_num_threads()))


def snapshot(tree: Any) -> Any:
    """
    A copy of a state tree (dicts, lists and tuples of tensors and plain values) with every tensor cloned: the
    round's rollback point. ``copy.deepcopy`` goes through each tensor's Python ``__deepcopy__`` (about 20x a clone),
    which was 7 % of a FederatedA2C round with per-agent torch optimisers.

    :param tree: a state dict (a module's keeps its ``_metadata``)
    :return: the copy
    """
    if isinstance(tree, th.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        copied = type(tree)((key, snapshot(value)) for key, value in tree.items())
        if hasattr(tree, "_metadata"):
            copied._metadata = copy.deepcopy(tree._metadata)  # type: ignore[attr-defined]
        return copied
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple takes its fields as arguments
        return type(tree)(*(snapshot(value) for value in tree))
    if isinstance(tree, list | tuple):
        return type(tree)(snapshot(value) for value in tree)
    return copy.deepcopy(tree)


class StopTrainingInRound(Exception):
    """A callback asked to stop in the middle of a round (the round is discarded)."""


class FederatedAlgorithm(FederatedPersistenceMixin):
    """
    Base class of the federated policy-gradient algorithms.

    An algorithm's constructor keeps its explicit, documented signature (as SB3's do) and hands all of its arguments
    to this one, which validates the hyperparameters (:attr:`hyperparams_class`) before any env is built, builds the
    env of an env id, sets every hyperparameter as an attribute and builds a named aggregator: the validation and
    construction every federated algorithm shares, written once.

    :param policy: The policy model to use (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``)
    :param env: The environment to learn from (a federated ``VecEnv``, any ``VecEnv``, or an env id)
    :param settings: the algorithm constructor's arguments by name (its ``locals()``): its hyperparameters (the fields
        of :attr:`hyperparams_class`, among them ``n_agents``, ``learning_rate``, ``participation``,
        ``n_envs_per_agent``, ``aggregator``, ``aggregator_kwargs``) and ``env_kwargs``, ``stats_window_size``,
        ``tensorboard_log``, ``policy_kwargs``, ``verbose``, ``seed``, ``device``, ``use_sde``, ``sde_sample_freq``
        (gSDE, :meth:`collect_batch`), ``attack`` and ``rollout_buffer_class``, ``rollout_buffer_kwargs``
        (:attr:`rollout_buffer`)
    :param supported_action_spaces: The action spaces supported by the algorithm
    """

    policy: ActorCriticPolicy
    _actor: BatchedActor
    #: why ``policy_kwargs['optimizer_class']`` / ``['optimizer_kwargs']`` cannot be this algorithm's local optimiser
    #: (refused with this reason); ``None``: the algorithm builds its agents' local optimisers from them
    #: (:mod:`sb3_fedpg.common.torch_optimizer`). A new algorithm refuses them until it uses them.
    optimizer_refusal: ClassVar[str | None] = (
        "this algorithm does not build its agents' local optimisers from policy_kwargs (the policy's own optimiser is "
        "never used)."
    )
    # Set from the constructor's hyperparameters (every algorithm has them) and _setup_model; declared for the type checker.
    n_steps: int
    correction: bool | str
    server_learning_rate: float
    aggregator: fedmath.Aggregator | str  # a name only until _check_hyperparams builds it (load(path, aggregator=...))
    aggregator_kwargs: dict[str, Any] | None
    attack: Callable[[Any, str], Any] | None
    gamma: float
    gae_lambda: float
    ent_coef: float
    max_grad_norm: float | None
    normalize_advantage: bool | str
    critics: StackedCritics

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        settings: dict[str, Any],
        supported_action_spaces: tuple[type[spaces.Space], ...] = ACTION_SPACES,
    ):
        from sb3_fedpg.common.aggregators import make_aggregator

        hyperparams = {name: settings[name] for name in self.hyperparams_class.names()}
        # Validate everything before any env is built (checked again in _setup_model, so load(**kwargs) is too).
        self.hyperparams_class(**hyperparams)
        aggregate = make_aggregator(hyperparams["aggregator"], **(hyperparams["aggregator_kwargs"] or {}))
        n_agents, n_envs_per_agent = hyperparams["n_agents"], hyperparams["n_envs_per_agent"]
        env_kwargs, seed = settings["env_kwargs"], settings["seed"]
        use_sde, sde_sample_freq = settings["use_sde"], settings["sde_sample_freq"]
        policy_kwargs = settings["policy_kwargs"]
        check_gsde_settings(use_sde, sde_sample_freq)
        check_buffer_class(settings.get("rollout_buffer_class"))
        check_policy_kwargs(policy_kwargs, type(self).__name__, self.optimizer_refusal, use_sde)
        if isinstance(env, str):
            env = make_federated_vec_env(env, n_agents, n_envs_per_agent, env_kwargs=env_kwargs, seed=seed)
        elif env_kwargs:
            raise ValueError("env_kwargs is only used when env is an env id; the env given is already built.")
        super().__init__(
            policy,
            env,
            learning_rate=hyperparams["learning_rate"],
            policy_kwargs=policy_kwargs,
            stats_window_size=settings["stats_window_size"],
            tensorboard_log=settings["tensorboard_log"],
            verbose=settings["verbose"],
            device=settings["device"],
            support_multi_env=True,
            seed=seed,
            use_sde=use_sde,  # SB3 refuses it for an env whose actions are not a Box
            sde_sample_freq=sde_sample_freq,
            supported_action_spaces=supported_action_spaces,
        )
        asked = str(settings["device"])
        if asked.startswith("cuda") and self.device.type != "cuda":  # SB3 falls back to the CPU without a word
            warnings.warn(
                f"device={asked!r} but no CUDA GPU is available (torch.cuda.is_available() is False): training runs on "
                "the CPU. Pass device='cpu' (or 'auto') to say so.",
                stacklevel=3,
            )
        for name, value in hyperparams.items():
            setattr(self, name, value)
        self.participation = float(hyperparams["participation"])
        self.aggregator = aggregate
        self.attack = settings["attack"]
        #: SB3's rollout buffer class and its extra keyword arguments (:attr:`rollout_buffer`)
        self.rollout_buffer_class: type[RolloutBuffer] | None = settings.get("rollout_buffer_class")
        self.rollout_buffer_kwargs: dict[str, Any] = settings.get("rollout_buffer_kwargs") or {}
        self._n_rounds = 0
        #: This model's run: saved with it and kept by load/load_checkpoint, so that checkpoint files say which run
        #: wrote them (:class:`~sb3_fedpg.common.callbacks.RoundCheckpointCallback` writes and prunes only its own).
        self.run_id = secrets.token_hex(8)
        #: Which algorithm wrote a saved file (plain JSON in it): ``load`` of another algorithm's file says so.
        self.algorithm_name = type(self).__name__
        #: ``normalize_advantage="shared"``: the last round's advantage scale, pooled over its participants from their
        #: moments (:func:`fedmath.shared_advantage_scale`; logged as ``train/advantage_scale``), and every agent's own
        #: scale relative to it (:func:`fedmath.advantage_ratios`; used by a solver without anchor batches in the next
        #: round: FedSVRPG-M). ``None`` until a round has completed.
        self.advantage_scale: float | None = None
        self.advantage_ratio: list[float] | None = None
        # Own generators, so sampling participants or actions does not shift any other random stream.
        self._participation_rng = np.random.default_rng(seed)
        self._action_rng = np.random.default_rng(None if seed is None else seed + 1)  # the NumPy rollout path's actions
        if self.env is not None:
            self._split_env_between_agents()

    def _split_env_between_agents(self) -> None:
        assert self.env is not None
        env_agents = getattr(self.env, "n_agents", None)
        if self.n_agents is None:
            self.n_agents = int(env_agents) if env_agents is not None else 1
        elif env_agents is not None and env_agents != self.n_agents:
            raise ValueError(f"n_agents={self.n_agents} but the federated env has {env_agents} agents.")
        if self.n_envs % self.n_agents != 0:
            raise ValueError(
                f"{self.n_envs} envs cannot be split evenly between {self.n_agents} agents: "
                "use a number of envs that is a multiple of n_agents."
            )
        self.n_envs_per_agent = self.n_envs // self.n_agents
        from sb3_fedpg.common.vec_normalize import check_normalization

        check_normalization(self.env, self.n_agents)
        if env_agents is None and self.n_agents > 1:
            _warn_if_family_copies(self.env, self.n_agents)

    def _check_env_split(self, env: Any, for_training: bool = True) -> None:
        """
        Check that ``env`` splits into this model's agents, and adopt its envs per agent (``M`` may change).

        :param env: the env given to ``load`` / ``set_env`` / ``learn``
        :param for_training: also refuse a plain env whose size is not a multiple of ``n_agents`` (prediction does
            not need the split, so ``load`` accepts one)
        :raises ValueError: saying both splits and how to fix it
        """
        n = self.n_agents
        if env is None or n is None:
            return
        if for_training:
            from sb3_fedpg.common.vec_normalize import check_normalization

            check_normalization(env, n)
        env_agents = getattr(env, "n_agents", None)
        model_split = f"{n} agents x {self.n_envs_per_agent} envs each"
        if env_agents is not None and int(env_agents) != n:
            per_agent = env.num_envs // int(env_agents) if int(env_agents) else env.num_envs
            raise ValueError(
                f"the federated env has {env_agents} agents x {per_agent} envs each, but the model has {model_split}: "
                f"each agent keeps its own critic and optimiser state, so the agents must match. Build the env for "
                f"{n} agents (make_federated_vec_env(..., n_agents={n}, n_envs_per_agent=M), any M), or train a new "
                f"model for {env_agents} agents."
            )
        if env.num_envs % n != 0:
            if not for_training:
                return
            raise ValueError(
                f"the env has {env.num_envs} sub-environments, which cannot be split between the model's {n} agents "
                f"(it was trained with {model_split}): give it an env of a multiple of {n} envs, e.g. "
                f"{n * self.n_envs_per_agent}, or a federated env with {n} agents."
            )
        self.n_envs_per_agent = env.num_envs // n

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """
        Use another env: same spaces, the same agents (a federated env must have ``n_agents`` agents; a plain one a
        multiple of ``n_agents`` sub-environments); the envs per agent may differ.

        :param env: the new env
        :param force_reset: reset it before training (always, when the number of envs changes)
        :raises ValueError: when the env does not split into the model's agents
        """
        env = self._wrap_env(env, self.verbose)
        check_for_correct_spaces(env, self.observation_space, self.action_space)
        self._check_env_split(env)
        previous = getattr(self, "n_envs", None)  # None: a model being loaded gets its first env
        if env.num_envs != previous:
            if previous is not None:
                announce_difference(
                    "set_env_other_count",
                    f"set_env with {env.num_envs} envs where the model had {previous}: accepted (SB3 asserts the same "
                    "number), because the split between the agents is what matters; each agent now steps "
                    f"{env.num_envs // max(1, self.n_agents or 1)} envs, so a round has other batch sizes.",
                )
            self.n_envs, force_reset = env.num_envs, True
        super().set_env(env, force_reset)

    def _check_hyperparams(self) -> None:
        """
        Validate the hyperparameters stored on the model (``load(path, **kwargs)`` reaches here with the new values);
        a model saved before a hyperparameter existed gets its default; an aggregator given by name is built.
        """
        from sb3_fedpg.common.aggregators import make_aggregator

        for name, default in self.hyperparams_class.defaults().items():
            if not hasattr(self, name):
                setattr(self, name, default)
        self.hyperparams_class.from_object(self)
        if not callable(self.aggregator):
            self.aggregator = make_aggregator(self.aggregator, **(self.aggregator_kwargs or {}))

    def _make_policy(self) -> ActorCriticPolicy:
        """
        :return: the SB3 policy from ``policy_class`` and ``policy_kwargs``, on the model's device. Its features
            extractor is not shared unless asked: the actor is federated, each agent's critic local (with
            ``share_features_extractor=True`` every agent's critic reads its own copy of the extractor, see
            :class:`~sb3_fedpg.common.batched_policy.StackedCritics`).
        """
        # checked before SB3's policy asserts on them (load(path, **kwargs) reaches here too)
        check_gsde_settings(self.use_sde, self.sde_sample_freq)
        if self.use_sde and not isinstance(self.action_space, spaces.Box):
            raise ValueError(GSDE_BOX_ONLY)
        check_policy_kwargs(self.policy_kwargs, type(self).__name__, self.optimizer_refusal, self.use_sde)
        kwargs = {"share_features_extractor": False, **self.policy_kwargs, "use_sde": self.use_sde}
        policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, **kwargs)
        return cast(ActorCriticPolicy, policy.to(self.device))  # policy_class: an ActorCriticPolicy (SB3 types BasePolicy)

    def _setup_federated_buffers(self) -> None:
        assert self.n_agents is not None, "n_agents is unknown: pass it or a federated env"
        self._agent_ep_buffers: list[deque] = [deque(maxlen=self._stats_window_size) for _ in range(self.n_agents)]
        # SB3's rollout buffer, built as SB3 builds it (its errors for a wrong class or keyword), filled on first read
        self._rollout_buffer = self._make_rollout_buffer(self.n_steps, self.n_agents * self.n_envs_per_agent)
        self._pending_rollout: RolloutBatch | None = None
        # The NumPy path only casts to float32: it is taken where that is all SB3's preprocessing does.
        self._numpy_rollout = self.device.type == "cpu" and self._actor.layout.is_float_passthrough and self._actor.numpy_ready

    def _check_policy(self) -> None:
        """
        Check the policy just built (``load(path, policy_kwargs=...)`` reaches here too): its ``policy_kwargs``, and
        warn when its class can answer ``predict_values`` from its untrained value head.
        """
        check_policy_kwargs(self.policy_kwargs, type(self).__name__, self.optimizer_refusal, self.use_sde)
        extractor = self.policy.features_extractor
        if self.policy.share_features_extractor and any(True for _ in extractor.parameters()):
            announce_difference(
                "shared_extractor_critic_copy",
                f"share_features_extractor=True with {type(extractor).__name__}, which has parameters: the actor's "
                "extractor is federated (averaged across agents) while each agent's critic is local, so every agent's "
                "critic reads its own copy of the extractor, initialised from the same weights and trained locally, "
                "never averaged (SB3 trains one extractor for both). model.policy holds the actor's (global) one; the "
                "critics' copies are in model.critics. Pass share_features_extractor=False (the default) for separate "
                "actor and critic extractors from the start.",
                stacklevel=4,
            )
        if not isinstance(self.policy, FederatedPolicyBase):
            warnings.warn(
                f"{type(self.policy).__name__} does not derive from sb3_fedpg's FederatedPolicyBase, so its "
                f"predict_values answers from an untrained value head: {NO_GLOBAL_CRITIC}",
                stacklevel=3,
            )

    def predict_agent_values(self, observation: np.ndarray) -> np.ndarray:
        """
        Every agent's own value estimate ``V_i(obs)``, from its local critic (trained on its own reward). The mean
        over agents estimates the value of the average objective; the policy has no global critic of its own.

        :param observation: a batch of observations ``(batch, *obs_shape)`` or one observation ``obs_shape`` (as
            SB3's ``predict`` takes them); for a ``Dict`` space a dict of such batches, one per key
        :return: values ``(n_agents, batch)`` (``batch = 1`` for one observation, 0 for an empty batch)
        :raises ValueError: when a ``Dict`` space gets no dict, or a dict without all of its keys, or an observation
            has neither the space's shape nor ``(batch, *shape)``
        """
        assert self.n_agents is not None  # known once the model is set up
        if isinstance(self.observation_space, spaces.Dict):
            keys = list(self.observation_space.spaces)
            if not isinstance(observation, dict) or set(observation) != set(keys):
                got = sorted(observation) if isinstance(observation, dict) else type(observation).__name__
                raise ValueError(f"the observation space is a Dict with keys {keys}: pass a dict of batches, got {got}")
            if len(next(iter(observation.values()))) > 0:  # SB3's check names the key and the shapes it expects
                arrays = {k: np.asarray(v) for k, v in observation.items()}
                is_vectorized_observation(cast(Any, arrays), self.observation_space)
            batches = {
                key: np.asarray(observation[key]).reshape(-1, *cast("tuple[int, ...]", self.observation_space[key].shape))
                for key in keys
            }
            obs = self._flat_obs(batches)
        else:
            obs_shape = cast("tuple[int, ...]", self.observation_space.shape)
            array = np.asarray(observation)
            if array.size == 0 and array.ndim == len(obs_shape) + 1:
                return np.zeros((self.n_agents, 0), dtype=np.float32)
            is_vectorized_observation(array, self.observation_space)  # SB3's clear error for any other shape
            obs = self._flat_obs(array.reshape(-1, *obs_shape))
        with th.no_grad(), self.critics.evaluation():  # as SB3's predict (dropout off, running statistics)
            values = self.critics(obs.unsqueeze(0).expand(self.n_agents, *obs.shape))
        return values.cpu().numpy()

    def _setup_lr_schedule(self) -> None:
        self.lr_schedule = FloatSchedule(self.learning_rate)

    def current_learning_rate(self) -> float:
        """
        :return: the learning rate of this round (the schedule at the current progress)
        :raises ValueError: when a schedule gives a value that is not a finite number > 0
        """
        value = float(self.lr_schedule(self._current_progress_remaining))
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"the learning_rate schedule gave {value!r} at progress_remaining={self._current_progress_remaining:.4g}; "
                "it must stay a finite number > 0 over the whole training (no round was run)."
            )
        return value

    def seed_streams(self, seed: int) -> None:
        """
        Reseed every random stream of the algorithm: Python, NumPy, torch, the action space, the env
        and the NumPy rollout's action sampler (a distributed agent calls this for every message).

        :param seed: the seed
        """
        self.set_random_seed(seed)
        self._action_rng = np.random.default_rng(seed)

    def start_fresh_episodes(self) -> None:
        """Reset the env (new episodes for every sub-environment) and forget the episode statistics."""
        assert self.env is not None and self.ep_info_buffer is not None and self.ep_success_buffer is not None
        self._last_obs = cast(VecObs, self.env.reset())  # arrays or dicts of arrays (no Tuple spaces)
        self._last_episode_starts = np.ones(self.env.num_envs, dtype=bool)
        self.ep_info_buffer.clear()
        self.ep_success_buffer.clear()

    # ---------------------------------------------------------------- global parameters
    @property
    def n_federated_params(self) -> int:
        """Size of the federated (actor) parameter vector."""
        return self._actor.n_params

    def get_global_parameters(self) -> th.Tensor:
        """:return: the global actor parameters ``θ̄`` as one flat vector (a copy)"""
        return self._actor.get_vector()

    def set_global_parameters(self, vector: th.Tensor | np.ndarray) -> None:
        """
        Replace the global actor parameters ``θ̄``.

        :param vector: flat parameters of length :attr:`n_federated_params`
        """
        vector = th.as_tensor(vector, dtype=th.float32, device=self.device)
        if vector.shape != (self._actor.n_params,):
            raise ValueError(f"expected a flat vector of {self._actor.n_params} parameters, got shape {tuple(vector.shape)}.")
        if not th.isfinite(vector).all():
            raise ValueError("the global parameters contain NaN or inf.")
        self._actor.set_vector(vector)
        self._reset_policy_noise()

    def _reset_policy_noise(self) -> None:
        """
        gSDE: ``predict(deterministic=False)`` samples with the SB3 policy's own exploration matrix; draw it again from
        the new global ``log_std`` (SB3's rollouts redraw it; here the agents' rollouts hold their own matrices).
        """
        if not self.use_sde:
            return
        # SB3's sample_weights without torch's argument check: a σ that underflowed to 0 (a diverging log_std) must not
        # fail a round whose parameters are already set; its matrix is then 0, the limit of N(0, σ²)
        dist = cast(StateDependentNoiseDistribution, self.policy.action_dist)
        with th.no_grad():
            std = dist.get_std(self.policy.log_std)
            dist.weights_dist = th.distributions.Normal(th.zeros_like(std), std, validate_args=False)
            dist.exploration_mat = dist.weights_dist.rsample()
            dist.exploration_matrices = dist.weights_dist.rsample((1,))

    def sample_participants(self) -> th.Tensor | None:
        """:return: the mask of this round's participants, or ``None`` when every agent takes part"""
        if self.participation >= 1.0:
            return None
        assert self.n_agents is not None
        count = max(1, round(self.participation * self.n_agents))
        mask = th.zeros(self.n_agents, dtype=th.bool, device=self.device)
        mask[th.as_tensor(self._participation_rng.choice(self.n_agents, count, replace=False))] = True
        return mask

    # ---------------------------------------------------------------- rollouts
    def reset_exploration(self, params: th.Tensor) -> None:
        """
        gSDE: draw new exploration matrices, one per sub-environment, each from its agent's own ``σ`` (its row of
        ``params``); on the CPU from the rollout's generator (the same seed gives the same matrices), else from torch's.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        """
        rng = self._action_rng if self.device.type == "cpu" else None
        self._actor.reset_noise(params, self.n_envs_per_agent, rng)

    def _flat_obs(self, obs: VecObs) -> th.Tensor:
        """
        :return: observations ``(batch, obs_dim)`` as the batched policy's input: SB3's preprocessing (images
            divided by 255 when the policy normalises images, one-hot for discrete spaces), exactly as
            ``policy.predict`` applies it, flattened (see :class:`~sb3_fedpg.common.observations.ObservationLayout`)
        """
        return self._actor.layout.flatten(obs, self.device)

    def _obs_to_tensor(self, obs: VecObs) -> th.Tensor:
        """:return: the observations of all sub-envs as ``(n_agents, M, obs_dim)``"""
        assert self.n_agents is not None  # known once the model is set up
        return self._flat_obs(obs).view(self.n_agents, self.n_envs_per_agent, -1)

    def collect_batch(
        self,
        params: th.Tensor,
        callback: BaseCallback,
        reset: bool = False,
        keep_truncations: bool = False,
        n_steps: int | None = None,
        before_rollout_end: Callable[[RolloutBatch], None] | None = None,
    ) -> RolloutBatch:
        """
        Step all agents' envs for ``n_steps`` under their current local parameters.

        With gSDE (``use_sde=True``) every sub-environment of every agent holds its own exploration matrix, drawn from
        its agent's ``log_std`` row at the start of the rollout and again every ``sde_sample_freq`` steps when that is
        ``> 0`` (SB3's ``reset_noise(n_envs)`` in ``collect_rollouts``; :meth:`reset_exploration`).

        The batch becomes the one :attr:`rollout_buffer` shows before the callbacks' ``on_rollout_end``.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param callback: SB3 callback, called at every env step (``on_rollout_start``, ``on_step``, ...)
        :param reset: start from the initial distribution (reset every env first)
        :param keep_truncations: record the final observations of time-limit truncations (for bootstrapping)
        :param n_steps: steps per sub-environment (``None``: the model's ``n_steps``)
        :param before_rollout_end: called with the batch just before ``on_rollout_end``
        :return: the batch
        :raises StopTrainingInRound: when a callback returns ``False``
        """
        assert self.env is not None and self.n_agents is not None
        n, m, k_steps = self.n_agents, self.n_envs_per_agent, self.n_steps if n_steps is None else n_steps
        action_shape = self.action_space.shape
        assert action_shape is not None  # every supported action space (ACTION_SPACES) has one
        if reset:
            self._last_obs = cast(VecObs, self.env.reset())  # arrays or dicts of arrays (no Tuple spaces)
            self._last_episode_starts = np.ones(n * m, dtype=bool)
        assert self._last_obs is not None  # the env was reset (by learn's setup, start_fresh_episodes or above)
        starts = getattr(self, "_last_episode_starts", None)  # SB3's, set by _setup_learn and at every step
        first_starts = np.ones(n * m, dtype=bool) if starts is None or len(starts) != n * m else np.array(starts, dtype=bool)
        obs_list, act_list, rew_list, done_list = [], [], [], []
        env_obs: list[VecObs] = []  # what SB3's buffer stores (VecEnvs give new arrays every step: kept, not copied)
        truncated_obs: list[tuple[int, int, np.ndarray]] = []
        params_np = params.detach().cpu().numpy() if self._numpy_rollout else None
        agent_ids = np.repeat(np.arange(n), m)
        # An unwrapped FederatedVecEnv has checked its rewards and observations in step() already (a wrapper may change them)
        checked_by_env = type(self.env) is FederatedVecEnv
        obs_t: np.ndarray | th.Tensor  # NumPy on the CPU fast path, torch otherwise
        actions: np.ndarray | th.Tensor
        resample_every = self.sde_sample_freq if self.use_sde and self.sde_sample_freq > 0 else None
        if self.use_sde:  # SB3 draws them before on_rollout_start
            self.reset_exploration(params)
        callback.on_rollout_start()
        for k in range(k_steps):
            if resample_every is not None and k > 0 and k % resample_every == 0:
                self.reset_exploration(params)
            if params_np is not None:
                # CPU fast path: the tiny per-step forward pass in NumPy (torch's per-op overhead dominates here).
                obs_t = np.asarray(self._last_obs, dtype=np.float32).reshape(n, m, -1)
                actions = self._actor.sample_numpy(params_np, obs_t, self._action_rng)
                env_actions = actions.reshape(n * m, *action_shape)
            else:
                obs_t = self._obs_to_tensor(self._last_obs)
                # on the CPU, the NumPy path's generator: the same seed gives the same actions on both paths
                actions = self._actor.sample(params, obs_t, self._action_rng if self.device.type == "cpu" else None)
                env_actions = actions.reshape(n * m, *action_shape).cpu().numpy()
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:  # gSDE's tanh-squashed actions, in [-1, 1]: rescaled, as in SB3
                    env_actions = self.policy.unscale_action(env_actions)
                else:
                    env_actions = np.clip(env_actions, self.action_space.low, self.action_space.high)
            elif isinstance(self.action_space, spaces.MultiBinary):
                env_actions = env_actions.astype(self.action_space.dtype)  # sampled as floats, like SB3's Bernoulli
            env_obs.append(self._last_obs)
            new_obs, rewards, dones, infos = self.env.step(env_actions)
            if not checked_by_env:  # convert-then-check what another env (or a wrapper) produced, naming the agents
                check_rewards(rewards, n * m, agent_ids)
                check_observations(new_obs, agent_ids)
            if k in (0, k_steps - 1) and not self._warned_obs_bounds:  # twice a rollout: next to free
                self._warn_obs_bounds(new_obs)
            self.num_timesteps += self.env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                raise StopTrainingInRound
            done_idx = np.flatnonzero(dones)
            # Only finished episodes carry stats: skip the per-env scan of SB3's _update_info_buffer.
            self._update_info_buffer([infos[i] for i in done_idx], dones[done_idx])
            for idx in done_idx:
                info = infos[idx]
                if "episode" in info:
                    self._agent_ep_buffers[idx // m].append(info["episode"]["r"])
                if keep_truncations and info.get("TimeLimit.truncated") and "terminal_observation" in info:
                    truncated_obs.append((k, int(idx), info["terminal_observation"]))
            obs_list.append(obs_t)
            act_list.append(actions)
            rew_list.append(rewards)
            done_list.append(dones)
            self._last_obs = cast(VecObs, new_obs)
            self._last_episode_starts = dones

        def stack_steps(x: list[np.ndarray]) -> th.Tensor:
            # (K, N*M) -> (N, K, M)
            return th.as_tensor(np.asarray(x), dtype=th.float32, device=self.device).view(k_steps, n, m).transpose(0, 1)

        def stack_agents(items: list) -> th.Tensor:
            # K x (N, M, ...) -> (N, K*M, ...), step-major within each agent
            stacked = th.as_tensor(np.stack(items, axis=1)) if params_np is not None else th.stack(items, dim=1)
            return stacked.to(self.device).reshape(n, k_steps * m, *stacked.shape[3:])

        batch = RolloutBatch(
            obs=stack_agents(obs_list),
            actions=stack_agents(act_list),
            rewards=stack_steps(rew_list),
            dones=stack_steps(done_list),
            last_obs=self._obs_to_tensor(self._last_obs),
            env_obs=env_obs,
            episode_starts=first_starts,
            behaviour_params=params.detach().clone(),  # a local step may move its tensor in place
        )
        if truncated_obs:
            steps, envs, terminal = zip(*truncated_obs, strict=True)
            batch.truncations = tuple(zip(steps, envs, strict=True))
            batch.terminal_obs = self._flat_obs(stack_observations(list(terminal)))
        self._pending_rollout = batch  # model.rollout_buffer is written from it when first read
        if self._actor.has_buffers:
            # with running statistics (batch norm) the behaviour log-probabilities are the rollout's only now: the
            # updates move the agents' statistics next
            batch.log_probs = self._behaviour_log_probs(batch)
        if before_rollout_end is not None:
            before_rollout_end(batch)
        callback.on_rollout_end()
        return batch

    # ---------------------------------------------------------------- SB3's rollout buffer
    def rollout_estimator(self) -> Estimator:
        """:return: the estimator whose weights (before normalisation) are the advantages this algorithm trains on"""
        raise NotImplementedError

    def _make_rollout_buffer(self, n_steps: int, n_envs: int) -> RolloutBuffer:
        return make_rollout_buffer(
            getattr(self, "rollout_buffer_class", None),  # a model saved before they existed: SB3's defaults
            getattr(self, "rollout_buffer_kwargs", None),
            n_steps,
            self.observation_space,
            self.action_space,
            self.device,
            self.gamma,
            self.gae_lambda,
            n_envs,
        )

    @property
    def rollout_buffer(self) -> RolloutBuffer:
        """
        SB3's ``RolloutBuffer`` (``DictRolloutBuffer`` for ``Dict`` observations, or ``rollout_buffer_class``) holding
        the last rollout, as SB3's callbacks read it in ``_on_rollout_end``: ``buffer_size = n_steps``,
        ``n_envs = N·M`` (every agent's sub-environments, agent-major as the federated ``VecEnv``), the observations as
        the env gave them, the actions as sampled (before clipping), the rewards (time-limit truncations bootstrapped
        with the agent's critic, as SB3 does), ``episode_starts``, ``log_probs`` under the parameters that collected
        them (the agent's local parameters in a local step), ``values`` from **each agent's own local critic**
        ``V_i`` (there is no global critic), the advantages the algorithm trains on before any normalisation (GAE with
        ``V_i``; with ``gpomdp``/``reinforce`` their weights, and ``values`` are 0) and ``returns = advantages + values``.

        A round of FederatedPG or FederatedSVRPGM collects several batches, each between its own ``on_rollout_start``
        and ``on_rollout_end``: the buffer holds each in turn (in ``_on_rollout_end``, the batch just collected, which
        the agents are about to train on). It is written when first read after a rollout (a model whose buffer is
        never read pays nothing); its values and advantages are then kept with the batch, so the solver trains on
        exactly these numbers. Before the first rollout it is empty, as SB3's.
        """
        batch = self._pending_rollout
        if batch is not None:
            self._pending_rollout = None
            buffer = self._rollout_buffer
            if buffer.buffer_size != batch.n_steps or buffer.n_envs != batch.n_agents * batch.n_envs:
                buffer = self._rollout_buffer = self._make_rollout_buffer(batch.n_steps, batch.n_agents * batch.n_envs)
            self._fill_rollout_buffer(buffer, batch)
        return self._rollout_buffer

    def _behaviour_log_probs(self, batch: RolloutBatch) -> th.Tensor:
        """:return: ``log π(a|s)`` of the batch's actions under the parameters that collected it, ``(N, K·M)``"""
        assert batch.behaviour_params is not None
        with th.no_grad(), self._actor.evaluation(), self._actor.frozen_buffers():  # as in the rollout (eval mode)
            return self._actor.distribution(batch.behaviour_params, batch.obs).log_prob(batch.actions)

    def _fill_rollout_buffer(self, buffer: RolloutBuffer, batch: RolloutBatch) -> None:
        """
        Write ``batch`` into SB3's ``buffer``: the values and advantages the algorithm trains on (computed now and kept
        in the batch if its solver has not yet), the behaviour log-probabilities (a solver's, or computed now).

        :param buffer: the buffer
        :param batch: a batch from :meth:`collect_batch`
        """
        estimator = self.rollout_estimator()
        if estimator.uses_critic:
            values, weights = critic_advantages(batch, self.critics, estimator)
            advantages = weights.weights
        else:  # no critic: the estimator's weights (rewards-to-go), no values
            advantages = estimator.weights(batch).weights
            values = th.zeros_like(advantages)
        log_probs = batch.log_probs if batch.log_probs is not None else self._behaviour_log_probs(batch)
        fill_rollout_buffer(buffer, batch, values, advantages, log_probs)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """
        SB3's ``collect_rollouts``: one rollout of ``n_rollout_steps`` steps of every sub-environment under the current
        **global** policy (every agent at ``θ̄``, eval mode) into ``rollout_buffer``, filled as :attr:`rollout_buffer`
        is (each agent's own critic's values and the algorithm's advantages) before the callbacks' ``on_rollout_end``.
        Nothing is trained (no round, no critic update; batch norm's running statistics are not moved);
        ``num_timesteps`` counts the steps, as in SB3. The rollouts of :meth:`learn` are the rounds' own.

        :param env: the model's env (``model.get_env()``; the agents and their episodes live in it)
        :param callback: SB3 callback (``on_rollout_start``, ``on_step``, ``on_rollout_end``)
        :param rollout_buffer: a ``RolloutBuffer`` of ``buffer_size = n_rollout_steps`` and ``n_envs = N·M``
        :param n_rollout_steps: steps per sub-environment
        :return: ``False`` when a callback stopped the rollout (SB3's answer), else ``True``
        :raises ValueError: for another env than the model's, or a buffer of another size
        """
        assert self.n_agents is not None
        if env is not self.env:
            raise ValueError(
                "collect_rollouts runs on the model's own env (model.get_env()): its agents' episodes and last "
                "observations live there. Call model.set_env(env) first to collect from another env."
            )
        if self._last_obs is None:
            raise ValueError("no last observation: call model._setup_learn(...) (or learn) before collect_rollouts.")
        n_envs = self.n_agents * self.n_envs_per_agent
        if rollout_buffer.buffer_size != n_rollout_steps or rollout_buffer.n_envs != n_envs:
            raise ValueError(
                f"the rollout buffer holds {rollout_buffer.buffer_size} steps of {rollout_buffer.n_envs} envs; this "
                f"rollout is {n_rollout_steps} steps of {n_envs} envs ({self.n_agents} agents x "
                f"{self.n_envs_per_agent} each)."
            )
        estimator = self.rollout_estimator()
        stacked = fedmath.broadcast_to_agents(self._actor.get_vector().to(self.device), self.n_agents)
        callback = self._round_callback(callback)
        self.policy.set_training_mode(False)
        previous = self._pending_rollout

        def fill(batch: RolloutBatch) -> None:
            self._fill_rollout_buffer(rollout_buffer, batch)
            # the model's own buffer: written now; another: the model's stays as it was, as in SB3
            self._pending_rollout = None if rollout_buffer is self._rollout_buffer else previous

        try:
            with self._actor.evaluation():
                self.collect_batch(
                    stacked,
                    callback,
                    reset=estimator.starts_from_reset,
                    keep_truncations=estimator.uses_critic,
                    n_steps=n_rollout_steps,
                    before_rollout_end=fill,
                )
        except StopTrainingInRound:
            return False
        return True

    # ---------------------------------------------------------------- learn
    def train(self, callback: BaseCallback | None = None) -> None:
        """
        One communication round.

        :param callback: SB3 callback called at every env step (a no-op if ``None``)
        """
        raise NotImplementedError

    def local_solver(self, callback: BaseCallback, learning_rate: float) -> fedmath.LocalSolver:
        """
        This round's local solver, as :meth:`train` runs it in-process and a distributed agent
        (:class:`sb3_fedpg.flower.agent.NeuralAgent`) runs it one phase at a time.

        :param callback: SB3 callback called at every env step
        :param learning_rate: the local step size of this round
        :return: the solver (its rollouts come from this algorithm's env)
        """
        raise NotImplementedError

    @property
    def steps_per_round(self) -> int:
        """Env steps (over all agents) that one round takes."""
        raise NotImplementedError

    @property
    def last_round(self) -> fedmath.RoundResult | None:
        """The last completed round (anchors, ``g``, local parameters, ...), ``None`` before the first."""
        return getattr(self, "_last_round", None)

    def local_state_dict(self) -> dict[str, Any]:
        """:return: every agent's local memory (critics, optimiser states, ...): what a failed round rolls back"""
        raise NotImplementedError

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        """
        :param state: the output of :meth:`local_state_dict`
        """
        raise NotImplementedError

    def run_atomic_round(self, solver: fedmath.LocalSolver) -> fedmath.RoundResult:
        """
        One round with ``solver`` as the agents' half (:func:`fedmath.run_round`), **atomic**: if it does not
        complete (a callback stops it, an env fails, a value is not finite), the global policy and every agent's local
        state (:meth:`local_state_dict`) stay as they were before it (the environments are not rolled back: their
        episodes go on). ``num_timesteps`` goes back too when the round fails; when a callback stops it, the steps
        run stay counted, as in SB3 (the callbacks saw them: ``EveryNTimesteps`` and the model agree).

        :param solver: the agents' local solver for this round
        :return: the completed round
        """
        assert self.n_agents is not None  # known once the model is set up
        theta_bar = self._actor.get_vector().to(self.device)
        local_state, steps_before = snapshot(self.local_state_dict()), self.num_timesteps
        self._round_in_flight = True  # save_checkpoint refuses until the round is complete or rolled back
        # every agent's own rows of the actor extractor's buffers (batch norm), from the global ones, for this round
        self._actor.open_local_buffers(self.n_agents)
        try:
            result = fedmath.run_round(
                theta_bar,
                solver,
                self.n_agents,
                server_learning_rate=self.server_learning_rate,
                aggregator=cast(fedmath.Aggregator, self.aggregator),  # built from a name by _check_hyperparams
                participants=self.sample_participants(),
                attack=self.attack,
            )
            if not bool(th.isfinite(result.params).all()):
                raise FloatingPointError(
                    "the aggregated global parameters are not finite; the round was discarded and the last good global "
                    "parameters kept. Lower the learning rate or check the agents' rewards."
                )
            buffers = self._merged_buffers(result.participants)
        except StopTrainingInRound:  # a normal end of training: the steps were run, SB3 counts them
            self.load_local_state_dict(local_state)
            raise
        except BaseException:
            self.load_local_state_dict(local_state)
            self.num_timesteps = steps_before
            raise
        finally:
            self._round_in_flight = False
            self._actor.close_local_buffers()  # a failed round's rows are dropped: the global buffers stay
        self._actor.set_vector(result.params)
        if buffers is not None:
            self._actor.set_buffers(buffers)
        self._reset_policy_noise()
        self._last_round = result
        self._n_rounds += 1
        self._merge_observation_statistics(result.participants)
        if result.advantage_scale is not None:  # set by the server from this round's anchors
            self.advantage_scale = result.advantage_scale
        else:  # a solver without anchor batches (FedSVRPG-M after its first round): the round's batches, for the next
            self._share_advantage_scale(
                getattr(getattr(solver, "stats", None), "advantage_moments", None), result.participants
            )
        return result

    def _merged_buffers(self, participants: th.Tensor | None) -> dict[str, th.Tensor] | None:
        """
        The server's average of the participants' rows of the actor extractor's buffers
        (:func:`fedmath.average_buffers`: batch norm's running statistics), the global buffers of the next round.

        :param participants: the round's participants (``None``: all)
        :return: the buffers by name (``None``: the extractor has none)
        :raises FloatingPointError: when an average is not finite (the round is discarded)
        """
        rows = self._actor.local_buffers()
        if rows is None:
            return None
        buffers = fedmath.average_buffers(rows, participants)
        bad = [name for name, value in buffers.items() if value.is_floating_point() and not bool(th.isfinite(value).all())]
        if bad:
            raise FloatingPointError(
                f"the averaged extractor buffers {bad} are not finite; the round was discarded and the last good global "
                "buffers kept. Lower the learning rate or check the agents' observations."
            )
        return buffers

    def _merge_observation_statistics(self, participants: th.Tensor | None) -> None:
        """
        The round boundary of federated observation normalisation: when the env is (or wraps) a
        :class:`~sb3_fedpg.common.vec_normalize.FederatedVecNormalize`, the server merges the global statistics with
        the participants' deltas and every agent continues from them (a failed round merges nothing: its observations
        stay in the deltas, merged at the next completed round).

        :param participants: the round's participants (``None``: all)
        """
        from sb3_fedpg.common.vec_normalize import FederatedVecNormalize, find_vec_normalize

        wrapper = find_vec_normalize(self.env)
        if isinstance(wrapper, FederatedVecNormalize):
            wrapper.merge(None if participants is None else participants.detach().cpu().numpy())

    def _share_advantage_scale(self, moments: th.Tensor | None, participants: th.Tensor | None) -> None:
        """
        The server's merge of the round's advantage moments into the next round's shared scale (the participants'
        only, like their anchors); kept when none arrived.

        :param moments: the agents' advantage moments of the round ``(N, 3)`` (``None``: not normalised ``"shared"``)
        :param participants: the round's participants (``None``: all)
        """
        if moments is None:
            return
        mask = None if participants is None else participants.detach().to(moments.device)
        scale = fedmath.shared_advantage_scale(moments, mask)
        if scale is not None:
            self.advantage_scale = scale
            self.advantage_ratio = [float(r) for r in fedmath.advantage_ratios(moments, scale)]

    def advantage_ratio_tensor(self) -> th.Tensor | None:
        """:return: :attr:`advantage_ratio` as a tensor on the model's device (``None`` if unknown)"""
        return None if self.advantage_ratio is None else th.tensor(self.advantage_ratio, device=self.device)

    def _excluded_save_params(self) -> list[str]:
        # a save from a step callback happens mid-round: the flag must not travel into the file; the rollout buffer is
        # rebuilt empty at load, as SB3's
        excluded = ["_round_in_flight", "_warned_obs_bounds", "_rollout_buffer", "_pending_rollout"]
        return [*super()._excluded_save_params(), *excluded]

    #: set once the model warned about observations far outside their Box (one warning per model)
    _warned_obs_bounds: bool = False

    def _warn_obs_bounds(self, obs: Any) -> None:
        problem = observations_far_out_of_bounds(obs, self.observation_space)
        if problem is not None:
            self._warned_obs_bounds = True
            warnings.warn(
                f"observations far outside the declared observation space: {problem}. The policy is built for the "
                "declared range: fix the env's observation_space, or normalise the observations "
                "(FederatedVecNormalize) if they are meant to be unbounded.",
                ObservationBoundsWarning,
                stacklevel=2,
            )

    def record_round(self, result: fedmath.RoundResult, learning_rate: float, updates: int, stats: dict[str, float]) -> None:
        """
        Log a completed round: ``train/learning_rate``, ``train/n_updates``, :func:`fedmath.round_metrics`, the
        solver's statistics (means over the round's batches) and ``fed/round``.

        :param result: the round
        :param learning_rate: the round's learning rate
        :param updates: local updates done in the round
        :param stats: the solver's statistics
        """
        self._n_updates += updates
        self.logger.record("train/learning_rate", learning_rate)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, value in {**fedmath.round_metrics(result, bool(self.correction)), **stats}.items():
            self.logger.record(key, value)
        self.logger.record("fed/round", self._n_rounds)

    def _round_callback(self, callback: BaseCallback | None) -> BaseCallback:
        callback = callback if callback is not None else CallbackList([])
        if getattr(callback, "model", None) is None:  # SB3 >= 2.8 sets ``model`` only in init_callback
            callback.init_callback(self)
        return callback

    def learn(
        self: SelfFederatedAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "FederatedAlgorithm",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFederatedAlgorithm:
        """
        Train for at least ``total_timesteps`` env steps, in whole rounds (the last round may go past
        ``total_timesteps``: a round is the unit of communication and is never cut short). Callbacks' locals and
        the progress bar's total give the steps that will really be run (a whole number of
        :attr:`steps_per_round`); the learning-rate schedules' progress follows ``total_timesteps``.

        :param total_timesteps: env steps over all agents
        :param callback: SB3 callback(s)
        :param log_interval: log every this many rounds
        :param tb_log_name: TensorBoard run name
        :param reset_num_timesteps: reset the step counter (``False`` continues a previous ``learn``)
        :param progress_bar: show a progress bar (tqdm/rich)
        :return: the trained model
        """
        if self.env is None:
            raise ValueError(
                f"this {type(self).__name__} has no environment to learn on (loaded without env=?): pass env= to "
                "load(), or call model.set_env(env) before learn()."
            )
        with _learning(self):
            self._check_env_split(self.env)
            _hint_torch_threads(self.device, self.verbose)
            total_timesteps, callback = self._setup_learn(
                total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
            )
            # Callbacks (the progress bar's total) see the steps learn will really run: whole rounds.
            rounds_needed = max(0, math.ceil((total_timesteps - self.num_timesteps) / self.steps_per_round))
            real_total = self.num_timesteps + rounds_needed * self.steps_per_round
            if real_total != max(total_timesteps, self.num_timesteps):
                asked = total_timesteps - self.num_timesteps
                announce_difference(
                    "whole_rounds",
                    f"learn({asked}) runs {rounds_needed} whole round(s) of steps_per_round={self.steps_per_round} env "
                    f"steps, {real_total - self.num_timesteps} in all: a round is the unit of communication and is "
                    "never cut short (SB3 stops at the first rollout that reaches total_timesteps). Ask for a multiple "
                    "of model.steps_per_round to run exactly that many steps.",
                )
            callback.on_training_start({**locals(), "total_timesteps": real_total}, globals())
            assert self.env is not None
            rounds = 0
            last_train: dict[str, tuple[Any, Any]] = {}
            while self.num_timesteps < total_timesteps:
                try:
                    self.train(callback)
                except StopTrainingInRound:
                    break
                rounds += 1
                self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
                if log_interval is not None and rounds % log_interval == 0:
                    last_train = self._train_records()
                    self.dump_logs(rounds)
                if not fire_round_end(callback):
                    break
            # SB3 dumps before its train step, so after learn its logger still holds the last train/ values (read as
            # model.logger.name_to_value["train/loss"]); this loop dumps after the round: put them back
            for key, (value, excluded) in last_train.items():
                self.logger.record(key, value, exclude=excluded)
            callback.on_training_end()
        return self

    def _train_records(self) -> dict[str, tuple[Any, Any]]:
        """:return: the ``train/`` values recorded since the last dump, with their exclusions"""
        logger = self.logger
        return {k: (v, logger.name_to_excluded.get(k)) for k, v in logger.name_to_value.items() if k.startswith("train/")}

    def dump_logs(self, iteration: int = 0) -> None:
        """
        Write the logs (SB3's ``rollout/``, ``time/`` keys and each agent's ``fed/agent_<i>/ep_rew_mean``).

        :param iteration: rounds done in this ``learn`` call (``0``: not recorded)
        """
        assert self.ep_info_buffer is not None and self.ep_success_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        if iteration > 0:
            self.logger.record("time/iterations", iteration, exclude="tensorboard")
        agent_means = [safe_mean(list(buffer)) for buffer in self._agent_ep_buffers if len(buffer) > 0]
        if len(self.ep_info_buffer) > 0:
            # J̄: the mean over agents of each agent's recent return, as the Flower server logs it. SB3's mean over
            # the last episodes of all agents pooled would weight each agent by how often its episodes end.
            self.logger.record("rollout/ep_rew_mean", float(np.mean(agent_means)))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        if len(self.ep_success_buffer) > 0:
            self.logger.record("rollout/success_rate", safe_mean(self.ep_success_buffer))
        for i, buffer in enumerate(self._agent_ep_buffers):
            if len(buffer) > 0:
                self.logger.record(f"fed/agent_{i}/ep_rew_mean", safe_mean(list(buffer)))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

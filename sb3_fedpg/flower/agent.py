"""
One Fast-FedPG agent outside the in-process algorithm, free of Flower.

An agent answers the two phases of a round — :meth:`anchor` (``a_i = ĝ_i(θ̄)``) and
:meth:`local_round` (``θ_{i,H}`` from ``θ̄``, ``a_i`` and ``g``) — through the same
:class:`~sb3_fedpg.common.fedmath.LocalSolver` the in-process :class:`~sb3_fedpg.FederatedPG`
uses, as a one-row batch. Its memory between messages (the local critic and the optimiser
states) goes in and out as named arrays plus a JSON skeleton (:meth:`begin` / :meth:`dump_state`,
:func:`flatten_state`), so a transport can keep it anywhere (a ClientApp keeps it in ``context.state``
as an ``ArrayRecord``; the long-lived agent worker simply keeps the agent). Nothing here imports Flower.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sb3_fedpg.flower.config import FlowerRunConfig


def message_seed(config: FlowerRunConfig, agent: int, server_round: int, phase: int) -> int:
    """
    Every (agent, round, phase) gets its own reproducible stream, the same in simulation and in a
    deployment (where the process, and so any RNG state, may be new for every message).

    :param config: the run configuration (its ``seed``)
    :param agent: the agent's index
    :param server_round: the round (1-based)
    :param phase: 1 (anchor) or 2 (local round)
    :return: the seed of this message
    """
    return int(np.random.SeedSequence([config.seed, agent, server_round, phase]).generate_state(1)[0])


#: An agent's memory as a transport stores it: named arrays and the JSON skeleton that puts them back together.
AgentState = tuple[dict[str, np.ndarray], str]


def flatten_state(state: Any) -> AgentState:
    """
    A nested state dict (torch ``state_dict`` of modules and optimisers) as flat named arrays plus a JSON skeleton,
    so it can travel as a Flower ``ArrayRecord`` (bit for bit) instead of a pickled blob.

    :param state: nested dicts/lists/tuples of tensors, arrays and JSON scalars (dict keys str or int)
    :return: ``(arrays, skeleton)``: the arrays by dotted path, and the structure with each array replaced by its name
    """
    arrays: dict[str, np.ndarray] = {}

    def walk(value: Any, path: str) -> Any:
        if hasattr(value, "detach"):  # a torch tensor (duck-typed: this module stays torch-free)
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            arrays[path] = np.ascontiguousarray(value)
            return {"array": path}
        if isinstance(value, dict):  # keys kept with their type (optimiser states are keyed by int)
            return {"dict": [[k, walk(v, f"{path}.{k}")] for k, v in value.items()]}
        if isinstance(value, list | tuple):
            return {type(value).__name__: [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if value is None or isinstance(value, bool | int | float | str):
            return {"value": value}
        raise TypeError(f"cannot flatten {type(value).__name__} at {path!r} of an agent's state")

    skeleton = walk(state, "state")
    return arrays, json.dumps(skeleton)


def unflatten_state(arrays: dict[str, np.ndarray], skeleton: str, to_tensor: Any = None) -> Any:
    """
    The inverse of :func:`flatten_state`.

    :param arrays: the named arrays
    :param skeleton: the JSON skeleton
    :param to_tensor: converts each array back (e.g. ``torch.from_numpy``); ``None`` keeps NumPy arrays
    :return: the nested state
    """

    def build(node: dict[str, Any]) -> Any:
        ((kind, value),) = node.items()
        if kind == "array":
            array = np.array(arrays[value])  # a writable copy
            return to_tensor(array) if to_tensor is not None else array
        if kind == "dict":
            return {k: build(v) for k, v in value}
        if kind == "list":
            return [build(v) for v in value]
        if kind == "tuple":
            return tuple(build(v) for v in value)
        return value

    return build(json.loads(skeleton))


class TabularAgent:
    """
    Agent ``i`` of a Garnet MDP with the exact softmax policy gradient of its own reward (deterministic).

    :param config: the run configuration
    :param agent: this agent's index
    :param n_agents: number of agents in the federation (the MDP's rewards depend on it only through
        the agent's own table, see :func:`sb3_fedpg.tabular.garnet`)
    """

    def __init__(self, config: FlowerRunConfig, agent: int, n_agents: int) -> None:
        self.config = config
        self.mdp = make_tabular_mdp(config, n_agents).subset([agent])
        self.n_params = self.mdp.n_params

    def initial_params(self) -> np.ndarray:
        """:return: ``θ̄_0 = 0`` (the uniform policy), float64"""
        return np.zeros(self.n_params)

    def begin(
        self, state: AgentState | None, seed: int, obs_stats: Any = None, training: bool = True, server_round: int = 0
    ) -> None:
        """
        Restore the agent's memory (nothing to restore: the exact oracle is stateless).

        :param state: the stored memory
        :param seed: this message's seed (unused, the oracle is deterministic)
        :param obs_stats: unused (no observations)
        :param training: unused
        :param server_round: unused
        """

    def reply_arrays(self) -> dict[str, np.ndarray]:
        """:return: arrays sent with the reply besides its vector (none)"""
        return {}

    def dump_state(self) -> AgentState:
        """:return: the agent's memory to store (nothing)"""
        return {}, "null"

    def num_examples(self) -> int:
        """:return: samples behind the last phase's vector (1: one exact gradient oracle call)"""
        return 1

    def _solver(self, learning_rate: float) -> Any:
        from sb3_fedpg.common import fedmath
        from sb3_fedpg.tabular import agent_gradients

        def grad_fn(params: np.ndarray, step: int) -> np.ndarray:
            return agent_gradients(self.mdp, params, self.config.tabular_tau).reshape(params.shape)

        return fedmath.CorrectedGradientSteps(
            grad_fn,
            self.config.local_steps,
            fedmath.gradient_step(learning_rate),
            self.config.correction,
            self.config.reuse_anchor_batch,
        )

    def anchor(self, theta_bar: np.ndarray) -> np.ndarray:
        """
        :param theta_bar: ``θ̄``
        :return: ``a_i = ∇J_i(θ̄)``
        """
        return np.asarray(self._solver(self.config.learning_rate).anchor(theta_bar, 1))[0]

    def local_round(
        self,
        theta_bar: np.ndarray,
        anchor: np.ndarray,
        global_grad: np.ndarray,
        learning_rate: float,
        advantage_scale: float | None = None,
        federation_noise: tuple[int, float] | None = None,
    ) -> np.ndarray:
        """
        :param theta_bar: ``θ̄``
        :param anchor: this agent's anchor ``a_i`` of the round
        :param global_grad: ``g``
        :param learning_rate: ``η``
        :param advantage_scale: unused (exact gradients have no advantages to normalise)
        :param federation_noise: unused (exact gradients have no noise)
        :return: ``θ_{i,H}``
        """
        local = self._solver(learning_rate).local_round(theta_bar, anchor[None], global_grad)
        return np.asarray(local)[0]

    def metrics(self) -> dict[str, float]:
        """:return: metrics of the last phase (none)"""
        return {}

    def evaluate(self, theta_bar: np.ndarray) -> dict[str, float]:
        """
        :param theta_bar: ``θ̄``
        :return: ``eval_return``: the exact objective ``J_i(θ̄)`` of this agent (entropy-regularised with ``tau``)
        """
        from sb3_fedpg.tabular import agent_objectives

        objective = agent_objectives(self.mdp, theta_bar[None], self.config.tabular_tau)
        return {"eval_return": float(np.asarray(objective).ravel()[0])}


def make_tabular_mdp(config: FlowerRunConfig, n_agents: int):
    """
    :param config: the run configuration
    :param n_agents: number of agents
    :return: the federated Garnet MDP of the tabular task
    """
    from sb3_fedpg.tabular import garnet

    return garnet(
        n_states=config.tabular_n_states,
        n_actions=config.tabular_n_actions,
        branching=config.tabular_branching,
        n_agents=n_agents,
        heterogeneity=config.heterogeneity,
        gamma=config.tabular_gamma,
        seed=config.seed,
    )


def make_agent_env(config: FlowerRunConfig, agent: int, n_agents: int, seed: int | None = None):
    """
    Agent ``i``'s own environment (its reward only), ``n_envs_per_agent`` sub-environments.

    :param config: the run configuration
    :param agent: the agent's index
    :param n_agents: number of agents in the federation (sets the agent's reward parameters)
    :param seed: seed of the first reset
    :return: a one-agent :class:`~sb3_fedpg.common.federated_vec_env.FederatedVecEnv`
    """
    from sb3_fedpg.common.federated_vec_env import make_agent_vec_env
    from sb3_fedpg.envs.families import get_family

    # The heterogeneity knob is a family parameter; a plain Gymnasium id takes none.
    env_kwargs = config.env_kwargs() if get_family(config.env_id) is not None else None
    return make_agent_vec_env(config.env_id, agent, n_agents, config.n_envs_per_agent, env_kwargs, seed=seed)


def make_agent_model(config: FlowerRunConfig, agent: int, n_agents: int):
    """
    A one-agent :class:`~sb3_fedpg.FederatedPG` (or :class:`~sb3_fedpg.FederatedPPO` with ``algorithm="fedppo"``)
    on agent ``i``'s environment.

    :param config: the run configuration
    :param agent: the agent's index
    :param n_agents: number of agents in the federation
    :return: the model (its policy is built from ``config.seed``, identical on every agent and the server)
    """
    from sb3_fedpg import FederatedPG, FederatedPPO

    algorithm = FederatedPPO if config.algorithm == "fedppo" else FederatedPG
    env = make_agent_env(config, agent, n_agents, seed=config.seed + agent)
    if config.normalize_obs:
        from sb3_fedpg.common.vec_normalize import FederatedVecNormalize

        env = FederatedVecNormalize(env, clip_obs=config.clip_obs)
    return algorithm("MlpPolicy", env, n_agents=1, seed=config.seed, device="cpu", **config.algorithm_kwargs())


class NeuralAgent:
    """
    One agent of a heterogeneous Gymnasium family: a one-agent :class:`~sb3_fedpg.FederatedPG` (or
    :class:`~sb3_fedpg.FederatedPPO`) whose local solver, local memory (critic, optimiser states) and rollouts are
    those of the in-process algorithm (:meth:`~sb3_fedpg.common.federated_algorithm.FederatedAlgorithm.local_solver`).
    What phase 2 needs from phase 1 besides the anchor (FederatedPPO's rollout) is part of the agent's memory.

    :param config: the run configuration
    :param agent: this agent's index
    :param n_agents: number of agents in the federation
    """

    def __init__(self, config: FlowerRunConfig, agent: int, n_agents: int) -> None:
        import torch as th
        from stable_baselines3.common.callbacks import CallbackList

        th.set_num_threads(1)  # one thread per agent process is fastest on small machines (NOTES.md)
        self.config = config
        self.model = make_agent_model(config, agent, n_agents)
        self.n_params = self.model.n_federated_params
        self.model._setup_learn(total_timesteps=1, callback=None, reset_num_timesteps=True, progress_bar=False)
        self._callback = CallbackList([])
        self._callback.init_callback(self.model)
        #: what this round's phase 2 needs from its phase 1 besides the anchor (FederatedPPO: the rollout)
        self._round_memory: dict[str, Any] = {}
        self._stats: dict[str, float] = {}
        #: federated observation normalisation: the round whose phase-2 reply last carried this agent's delta (-1: none
        #: unconfirmed); the delta is cleared once the server says it merged that round's reply
        self._obs_sent_round = -1
        self._reply_arrays: dict[str, np.ndarray] = {}
        self.agent = agent
        self._server_round = 0

    @property
    def normalizer(self) -> Any:
        """The agent's :class:`~sb3_fedpg.common.vec_normalize.FederatedVecNormalize` (``None`` without ``normalize-obs``)"""
        from sb3_fedpg.common.vec_normalize import FederatedVecNormalize

        env = self.model.env
        return env if isinstance(env, FederatedVecNormalize) else None

    def initial_params(self) -> np.ndarray:
        """:return: the initial global parameters ``θ̄_0`` (float32)"""
        return self.model.get_global_parameters().cpu().numpy()

    def begin(
        self, state: AgentState | None, seed: int, obs_stats: Any = None, training: bool = True, server_round: int = 0
    ) -> None:
        """
        Restore the agent's memory and reseed every random stream and the environments for this message.

        :param state: the stored memory (``None``: keep what this object holds, e.g. at the first message or in
            a long-lived worker)
        :param seed: this message's seed
        :param obs_stats: the server's observation statistics of this message (``normalize-obs``): the merged global
            statistics and the last round each agent's delta was merged in (see :meth:`receive_obs_statistics`)
        :param training: ``False`` for an evaluation (the statistics are used, not updated)
        :param server_round: the message's round
        """
        import torch as th

        model = self.model
        self._reply_arrays = {}
        self._server_round = server_round
        if state is not None:
            memory = unflatten_state(*state, to_tensor=th.from_numpy)
            model.load_local_state_dict(memory["local"])
            self._round_memory = memory["round"]
            if "obs-norm" in memory and self.normalizer is not None:
                self.normalizer.load_statistics_state(memory["obs-norm"])
                self._obs_sent_round = int(memory["obs-sent-round"])
        if self.normalizer is not None:
            self.normalizer.training = training
            if obs_stats is not None:
                self.receive_obs_statistics(obs_stats, training)
        model.seed_streams(seed)
        # A fresh reset per message: deployment cannot keep episodes running between processes,
        # so simulation does the same and both see the same batches.
        model.start_fresh_episodes()
        model.num_timesteps = 0
        self._stats = {}

    def dump_state(self) -> AgentState:
        """
        :return: the local critic, its optimiser and the local optimiser state, and what phase 2 needs from phase 1
            (see :func:`flatten_state`)
        """
        memory: dict[str, Any] = {"local": self.model.local_state_dict(), "round": self._round_memory}
        if self.normalizer is not None:
            memory["obs-norm"] = self.normalizer.statistics_state()
            memory["obs-sent-round"] = self._obs_sent_round
        return flatten_state(memory)

    def receive_obs_statistics(self, arrays: Any, training: bool = True) -> None:
        """
        Take the server's merged observation statistics (``obs-count``, ``obs-mean``, ``obs-m2``) and
        ``obs-merged-round`` (per agent, the last round whose delta the server merged). The agent's delta is cleared
        when the server merged the reply that carried it; otherwise it is kept and sent again, so every observation is
        merged exactly once. In an evaluation only the global statistics are taken.

        :param arrays: the message's named arrays
        :param training: ``False``: an evaluation message
        :raises ValueError: when the statistics are malformed (the server never sends such)
        """
        from sb3_fedpg.common.vec_normalize import moments_from_arrays

        normalizer = self.normalizer
        moments, problem = moments_from_arrays(arrays, normalizer.global_moments(), "obs")
        if moments is None:
            raise ValueError(f"the server's observation statistics are malformed: {problem}")
        if not training:  # evaluation normalises with the global statistics; the deltas stay as they are
            normalizer.set_global_moments(moments, agents=False)
            return
        rounds = arrays["obs-merged-round"]
        merged_rounds = np.asarray(rounds.numpy() if hasattr(rounds, "numpy") else rounds).reshape(-1)
        sent = self._obs_sent_round
        merged = sent >= 0 and self.agent < len(merged_rounds) and int(merged_rounds[self.agent]) >= sent
        normalizer.set_global_moments(moments, np.array([merged]))
        if merged:
            self._obs_sent_round = -1

    def num_examples(self) -> int:
        """
        :return: environment steps behind the last phase's vector (Flower's ``num-examples``; FederatedPPO's local
            round reuses its phase-1 rollout: that rollout's size)
        """
        rollout = self._round_memory.get("advantages")
        return int(self.model.num_timesteps) or (int(rollout.numel()) if rollout is not None else 0)

    def _solver(self, learning_rate: float) -> Any:
        return self.model.local_solver(self._callback, learning_rate)

    def _keep_stats(self, solver: Any) -> None:
        self._stats = dict(solver.stats.means())  # every local solver starts its round's statistics empty

    def anchor(self, theta_bar: np.ndarray) -> np.ndarray:
        """
        :param theta_bar: ``θ̄``
        :return: ``a_i = ĝ_i(θ̄)`` on a fresh batch
        """
        import torch as th

        from sb3_fedpg.common import fedmath

        solver = self._solver(self.config.agent_learning_rate)
        anchor = solver.anchor(th.as_tensor(theta_bar), 1)
        self._round_memory = solver.round_memory() if hasattr(solver, "round_memory") else {}
        self._keep_stats(solver)
        noise = solver.anchor_noise() if hasattr(solver, "anchor_noise") else None
        if noise is not None:  # FederatedPPO's snr_damping: the server sums the agents' anchor noise for phase 2
            self._stats["anchor-noise"] = float(noise[0])
        if isinstance(anchor, fedmath.ScaledAnchors):  # the server sets the advantage scale: parts and moments
            count, m2, groups = (float(x) for x in anchor.moments[0])
            self._stats.update({"adv-count": count, "adv-m2": m2, "adv-groups": groups})
            return anchor.vector()[0].detach().cpu().numpy()
        return anchor[0].detach().cpu().numpy()

    def local_round(
        self,
        theta_bar: np.ndarray,
        anchor: np.ndarray,
        global_grad: np.ndarray,
        learning_rate: float,
        advantage_scale: float | None = None,
        federation_noise: tuple[int, float] | None = None,
    ) -> np.ndarray:
        """
        :param theta_bar: ``θ̄``
        :param anchor: what this agent sent in phase 1: its anchor ``a_i``, or its parts when the server sets the
            advantage scale
        :param global_grad: ``g``
        :param learning_rate: ``η``
        :param advantage_scale: the round's shared advantage scale (with anchors sent in parts)
        :param federation_noise: the number of anchors in ``g`` and the sum of their noise (FederatedPPO's
            ``snr_damping``)
        :return: ``θ_{i,H}``
        """
        import torch as th

        from sb3_fedpg.common import fedmath

        solver = self._solver(learning_rate)
        if hasattr(solver, "load_round_memory"):
            solver.load_round_memory(self._round_memory)
        anchor_grads = th.as_tensor(anchor[None])
        if self.config.shared_normalization:
            if advantage_scale is None:
                raise ValueError("a phase-2 request of a run with shared advantage normalisation needs the scale")
            parts = fedmath.ScaledAnchors.from_vector(anchor_grads, self.n_params, None)
            anchor_grads = parts.assemble(advantage_scale)
            solver.use_advantage_scale(advantage_scale)
        if federation_noise is not None and hasattr(solver, "federation_noise"):
            solver.federation_noise = federation_noise
        local = solver.local_round(th.as_tensor(theta_bar), anchor_grads, th.as_tensor(global_grad, dtype=th.float32))
        self._keep_stats(solver)
        if self.normalizer is not None:  # everything seen since the last merge, sent with the phase-2 reply
            from sb3_fedpg.common.vec_normalize import moments_to_arrays

            self._reply_arrays = moments_to_arrays(self.normalizer.delta_moments(0), "obs-delta")
            self._obs_sent_round = self._server_round
        return local[0].detach().cpu().numpy()

    def reply_arrays(self) -> dict[str, np.ndarray]:
        """:return: arrays sent with the reply besides its vector: the observation delta after a local round"""
        return self._reply_arrays

    def evaluate(self, theta_bar: np.ndarray) -> dict[str, float]:
        """
        The global policy's deterministic return under this agent's reward, on fresh episodes of its environments.

        :param theta_bar: ``θ̄``
        :return: ``eval_return`` (mean over ``eval_episodes`` episodes per sub-environment) and ``eval_episodes``
        """
        from sb3_fedpg.common.evaluation import evaluate_agents

        self.model.set_global_parameters(theta_bar)
        episodes = self.config.eval_episodes
        (mean,) = evaluate_agents(self.model, self.model.env, n_episodes_per_env=episodes)
        return {"eval_return": float(mean), "eval_episodes": episodes * self.config.n_envs_per_agent}

    def metrics(self) -> dict[str, float]:
        """:return: metrics of this message's batches (episode returns under the agent's own reward)"""
        model = self.model
        out = {key.split("/")[-1]: value for key, value in self._stats.items()}
        if len(model.ep_info_buffer) > 0:
            out["ep_rew_mean"] = float(np.mean([ep["r"] for ep in model.ep_info_buffer]))
            out["ep_len_mean"] = float(np.mean([ep["l"] for ep in model.ep_info_buffer]))
        out["num_timesteps"] = float(model.num_timesteps)
        return out


# In simulation a worker handles many messages of many virtual agents: building the model once per
# agent saves time. It is only a cache: the agent's memory is always restored from the transport.
_AGENT_CACHE: dict[tuple[Any, int, str], TabularAgent | NeuralAgent] = {}


def get_agent(config: FlowerRunConfig, run_id: Any, agent: int, n_agents: int) -> TabularAgent | NeuralAgent:
    """
    :param config: the run configuration
    :param run_id: the run (agents of different runs are never shared)
    :param agent: the agent's index
    :param n_agents: number of agents
    :return: the agent
    """
    key = (run_id, agent, repr(config))
    if key not in _AGENT_CACHE:
        if len(_AGENT_CACHE) > 64:
            _AGENT_CACHE.clear()
        cls = TabularAgent if config.task == "tabular" else NeuralAgent
        _AGENT_CACHE[key] = cls(config, agent, n_agents)
    return _AGENT_CACHE[key]

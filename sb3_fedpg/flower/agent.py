"""
One Fast-FedPG agent outside the in-process algorithm, free of Flower.

An agent answers the two phases of a round — :meth:`anchor` (``a_i = ĝ_i(θ̄)``) and
:meth:`local_round` (``θ_{i,H}`` from ``θ̄``, ``a_i`` and ``g``) — through the same
:class:`~sb3_fedpg.common.fedmath.LocalSolver` the in-process :class:`~sb3_fedpg.FederatedPG`
uses, as a one-row batch. Its memory between messages (the local critic and the optimiser
states) goes in and out as bytes (:meth:`begin` / :meth:`dump_state`), so a transport can keep
it anywhere (Flower keeps it in ``context.state``). Nothing here imports Flower.
"""

from __future__ import annotations

import io
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

    def begin(self, state: bytes | None, seed: int) -> None:
        """
        Restore the agent's memory (nothing to restore: the exact oracle is stateless).

        :param state: the stored memory
        :param seed: this message's seed (unused, the oracle is deterministic)
        """

    def dump_state(self) -> bytes:
        """:return: the agent's memory to store (empty)"""
        return b""

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
        self, theta_bar: np.ndarray, anchor: np.ndarray, global_grad: np.ndarray, learning_rate: float
    ) -> np.ndarray:
        """
        :param theta_bar: ``θ̄``
        :param anchor: this agent's anchor ``a_i`` of the round
        :param global_grad: ``g``
        :param learning_rate: ``η``
        :return: ``θ_{i,H}``
        """
        local = self._solver(learning_rate).local_round(theta_bar, anchor[None], global_grad)
        return np.asarray(local)[0]

    def metrics(self) -> dict[str, float]:
        """:return: metrics of the last phase (none)"""
        return {}


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
    A one-agent :class:`~sb3_fedpg.FederatedPG` on agent ``i``'s environment.

    :param config: the run configuration
    :param agent: the agent's index
    :param n_agents: number of agents in the federation
    :return: the model (its policy is built from ``config.seed``, identical on every agent and the server)
    """
    from sb3_fedpg import FederatedPG

    env = make_agent_env(config, agent, n_agents, seed=config.seed + agent)
    return FederatedPG("MlpPolicy", env, n_agents=1, seed=config.seed, device="cpu", **config.algorithm_kwargs())


class NeuralAgent:
    """
    One agent of a heterogeneous Gymnasium family: a one-agent :class:`~sb3_fedpg.FederatedPG` whose
    learner (local critic, optimiser states) and batch sampler are those of the in-process algorithm.

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

    def initial_params(self) -> np.ndarray:
        """:return: the initial global parameters ``θ̄_0`` (float32)"""
        return self.model.get_global_parameters().cpu().numpy()

    def begin(self, state: bytes | None, seed: int) -> None:
        """
        Restore the agent's memory and reseed every random stream and the environments for this message.

        :param state: the stored memory (``None`` at the first message)
        :param seed: this message's seed
        """
        import torch as th

        model = self.model
        if state:
            model.learner.load_local_state_dict(th.load(io.BytesIO(state), weights_only=True))
        model.seed_streams(seed)
        # A fresh reset per message: deployment cannot keep episodes running between processes,
        # so simulation does the same and both see the same batches.
        model.start_fresh_episodes()
        model.num_timesteps = 0
        model.learner.stats = type(model.learner.stats)()

    def dump_state(self) -> bytes:
        """:return: the local critic, its optimiser and the local optimiser state, serialised"""
        import torch as th

        buffer = io.BytesIO()
        th.save(self.model.learner.local_state_dict(), buffer)
        return buffer.getvalue()

    def _solver(self, learning_rate: float) -> Any:
        model = self.model
        return model.learner.solver(
            lambda params, step: model.sample_batch(params, self._callback),
            learning_rate,
            model.local_steps,
            correction=model.correction,
            reuse_anchor=model.reuse_anchor_batch,
            variance_control=model.variance_control,
            anchor_batches=model.n_anchor_batches,
        )

    def anchor(self, theta_bar: np.ndarray) -> np.ndarray:
        """
        :param theta_bar: ``θ̄``
        :return: ``a_i = ĝ_i(θ̄)`` on a fresh batch
        """
        import torch as th

        return self._solver(self.config.learning_rate).anchor(th.as_tensor(theta_bar), 1)[0].numpy()

    def local_round(
        self, theta_bar: np.ndarray, anchor: np.ndarray, global_grad: np.ndarray, learning_rate: float
    ) -> np.ndarray:
        """
        :param theta_bar: ``θ̄``
        :param anchor: this agent's anchor ``a_i`` of the round
        :param global_grad: ``g``
        :param learning_rate: ``η``
        :return: ``θ_{i,H}``
        """
        import torch as th

        local = self._solver(learning_rate).local_round(
            th.as_tensor(theta_bar), th.as_tensor(anchor[None]), th.as_tensor(global_grad, dtype=th.float32)
        )
        return local[0].detach().cpu().numpy()

    def metrics(self) -> dict[str, float]:
        """:return: metrics of this message's batches (episode returns under the agent's own reward)"""
        model = self.model
        out = {key.split("/")[-1]: value for key, value in model.learner.stats.means().items()}
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

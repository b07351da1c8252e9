"""
A fair central baseline: SB3's PPO/A2C on the pooled federation with a critic that knows the agent.

Pooled central training puts every agent's samples behind one critic. The agents reward different things, so for
the same state that critic is asked for several values at once, and its advantages mix the agents' rewards — a
handicap of the baseline, not a property of central training. Here each sub-environment's observation carries its
agent's one-hot (:class:`AgentIdVecEnv`), the **critic** reads it and the **actor** does not
(:class:`AgentAwareCriticPolicy` zeroes those entries before the actor's features): one shared policy, as in the
federation, with one value head per agent in effect.

    from stable_baselines3 import PPO
    from sb3_fedpg import make_federated_vec_env
    from sb3_fedpg.common.agent_aware import AgentAwareCriticPolicy, AgentIdVecEnv

    env = AgentIdVecEnv(make_federated_vec_env("sb3_fedpg/HeteroPendulum-v0", n_agents=4, n_envs_per_agent=2))
    model = PPO(AgentAwareCriticPolicy, env, policy_kwargs={"n_agent_ids": env.n_agents})
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class AgentIdVecEnv(VecEnvWrapper):
    """
    Append each sub-environment's agent one-hot to its (flat ``Box``) observation, terminal observations included.

    :param venv: a federated ``VecEnv`` (agent-major: sub-environment ``e`` belongs to agent ``e // M``), with
        ``n_agents`` and ``n_envs_per_agent`` attributes
    """

    def __init__(self, venv: VecEnv) -> None:
        space = venv.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"AgentIdVecEnv needs flat Box observations, got {space}: flatten them first.")
        n_agents = getattr(venv, "n_agents", None)
        if not isinstance(n_agents, int) or n_agents < 1:
            raise ValueError(
                f"AgentIdVecEnv needs a federated VecEnv that knows its agents (n_agents), got {type(venv).__name__}: "
                "build it with sb3_fedpg.make_federated_vec_env."
            )
        if venv.num_envs % n_agents:
            raise ValueError(f"{venv.num_envs} sub-environments cannot be split evenly over {n_agents} agents.")
        self.n_agents = n_agents
        self.n_envs_per_agent = venv.num_envs // n_agents
        low = np.concatenate([space.low, np.zeros(n_agents, dtype=space.dtype)])
        high = np.concatenate([space.high, np.ones(n_agents, dtype=space.dtype)])
        super().__init__(venv, observation_space=spaces.Box(low, high, dtype=space.dtype))
        agents = np.arange(venv.num_envs) // self.n_envs_per_agent
        self._ids = np.eye(n_agents, dtype=space.dtype)[agents]

    def _with_ids(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, self._ids[: len(obs)]], axis=1)

    def reset(self) -> VecEnvObs:
        return self._with_ids(np.asarray(self.venv.reset()))

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for e, info in enumerate(infos):
            if "terminal_observation" in info:  # SB3 bootstraps truncated episodes from it: the critic needs the id
                info["terminal_observation"] = np.concatenate([np.asarray(info["terminal_observation"]), self._ids[e]])
        return self._with_ids(np.asarray(obs)), rewards, dones, infos


class _WithoutAgentIds(BaseFeaturesExtractor):
    """The actor's features extractor, fed observations whose last ``n`` entries (the agent one-hot) are zero."""

    def __init__(self, extractor: BaseFeaturesExtractor, observation_space: spaces.Space, n: int) -> None:
        super().__init__(observation_space, extractor.features_dim)
        self.extractor = extractor
        self.n = n

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.extractor(th.cat([obs[..., : -self.n], th.zeros_like(obs[..., -self.n :])], dim=-1))


class AgentAwareCriticPolicy(ActorCriticPolicy):
    """
    SB3's actor-critic policy whose critic reads the agent one-hot that :class:`AgentIdVecEnv` appends and whose actor
    does not (its inputs there are zero, so the shared policy is the same for every agent). The features extractor is
    never shared between the two.

    :param args: SB3's ``ActorCriticPolicy`` arguments
    :param n_agent_ids: the number of one-hot entries at the end of each observation (the number of agents)
    :param kwargs: SB3's ``ActorCriticPolicy`` keyword arguments (``share_features_extractor`` must be ``False``)
    """

    def __init__(self, *args: Any, n_agent_ids: int, **kwargs: Any) -> None:
        if kwargs.get("share_features_extractor"):
            raise ValueError("AgentAwareCriticPolicy needs separate actor and critic features (the actor ignores the id).")
        kwargs["share_features_extractor"] = False
        self.n_agent_ids = int(n_agent_ids)
        if self.n_agent_ids < 1:
            raise ValueError(f"n_agent_ids must be >= 1, got {n_agent_ids}.")
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.pi_features_extractor = _WithoutAgentIds(self.pi_features_extractor, self.observation_space, self.n_agent_ids)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "n_agent_ids": self.n_agent_ids}

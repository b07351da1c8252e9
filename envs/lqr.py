"""
Heterogeneous LQR family: shared linear dynamics, per-agent quadratic costs of different curvature.

``sb3_fedpg/HeteroLQR-v0``
    Dynamics ``x' = A x + B u + w`` of :func:`sb3_fedpg.lqr.random_lqr` (instance ``instance``;
    ``w ~ N(0, noise_std² I)``, ``x_0 ~ N(0, I)``). Agent ``i`` earns ``r_i = −(xᵀQ_i x + uᵀR_i u)``
    on the state before the step and the applied action (``u`` clipped to ``[−action_bound, action_bound]``).
    Episodes are truncated after ``max_episode_steps`` steps and never terminate. ``heterogeneity``
    ``h`` rotates the agents' cost matrices apart (0 = identical agents) and spreads their input prices
    (log-spread ``h · input_scale_spread``; ``cost_condition`` is the eigenvalue ratio of the base costs: see
    :func:`sb3_fedpg.lqr.random_lqr`). ``A`` is open-loop stable
    (``spectral_radius < 1`` is required), so with bounded actions the state stays bounded and no
    policy can produce non-finite observations or rewards.

    The exact counterpart of a family instance is :func:`lqr_problem` (same ``A``, ``B``, ``Q_i``,
    ``R_i``), whose ground truth ``K*`` (Riccati) is the optimal linear gain of the mean cost as long
    as the actions it asks for stay inside the bounds.

``sb3_fedpg/LQR-v0``
    The shared dynamics alone (one agent, costs ``(Q0, R0)``): the base id of the family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from sb3_fedpg.envs.families import FamilySpec, register_family
from sb3_fedpg.envs.vector import vectorize_same_step

if TYPE_CHECKING:  # envs stays light: the problem (SciPy) is imported when an env is made
    from sb3_fedpg.lqr.problem import FederatedLQR

#: family parameters and their defaults (all but ``heterogeneity`` shape the shared dynamics or bounds)
LQR_DEFAULTS: dict[str, Any] = {
    "heterogeneity": 1.0,
    "instance": 0,
    "n_states": 4,
    "n_inputs": 2,
    "spectral_radius": 0.8,
    "cost_condition": 10.0,
    "input_scale_spread": 0.5,
    "noise_std": 0.0,
    "action_bound": 10.0,
    "max_episode_steps": 100,
}


def _checked(params: dict[str, Any]) -> dict[str, Any]:
    if params["heterogeneity"] < 0:
        raise ValueError(f"heterogeneity must be >= 0 (0 = identical agents), got {params['heterogeneity']}.")
    if not 0 < params["spectral_radius"] < 1:
        raise ValueError(
            f"HeteroLQR needs an open-loop stable A (0 < spectral_radius < 1), got {params['spectral_radius']}: "
            "with bounded actions an unstable A could make the state diverge."
        )
    if not params["action_bound"] > 0 or params["max_episode_steps"] < 1 or params["noise_std"] < 0:
        raise ValueError("need action_bound > 0, max_episode_steps >= 1 and noise_std >= 0.")
    return params


def lqr_problem(n_agents: int, gamma: float = 0.9, **family_kwargs: Any) -> FederatedLQR:
    """
    The exact federated LQR behind a ``HeteroLQR-v0`` instance (for ground truth).

    :param n_agents: number of agents
    :param gamma: discount of the cost (the algorithm's ``gamma``)
    :param family_kwargs: the family parameters (``heterogeneity``, ``instance``, ...)
    :return: the :class:`~sb3_fedpg.lqr.FederatedLQR`
    """
    from sb3_fedpg.lqr.problem import random_lqr

    p = _checked({**LQR_DEFAULTS, **family_kwargs})
    return random_lqr(
        n_states=p["n_states"],
        n_inputs=p["n_inputs"],
        n_agents=n_agents,
        heterogeneity=p["heterogeneity"],
        seed=p["instance"],
        gamma=gamma,
        spectral_radius=p["spectral_radius"],
        cost_condition=p["cost_condition"],
        input_scale_spread=p["input_scale_spread"],
        noise_std=p["noise_std"],
    )


def _spaces(n_states: int, n_inputs: int, action_bound: float) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    obs = gym.spaces.Box(-np.inf, np.inf, shape=(n_states,), dtype=np.float32)
    act = gym.spaces.Box(-action_bound, action_bound, shape=(n_inputs,), dtype=np.float32)
    return obs, act


class LQRCostReward:
    """
    Batched reward of ``HeteroLQR``: ``r_i = −(xᵀQ_i x + uᵀR_i u)``, ``x`` the state before the step.

    :param n_agents: number of agents
    :param family_kwargs: the family parameters
    """

    def __init__(self, n_agents: int, **family_kwargs: Any) -> None:
        params = _checked({**LQR_DEFAULTS, **family_kwargs})
        problem = lqr_problem(n_agents, **params)
        self.Q = problem.Q
        self.R = problem.R
        self.action_bound = float(params["action_bound"])

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(len(x), -1), -self.action_bound, self.action_bound)
        Q, R = self.Q[agent_ids], self.R[agent_ids]
        return -(np.einsum("ni,nij,nj->n", x, Q, x) + np.einsum("ni,nij,nj->n", u, R, u))


class LQRDynamicsEnv(gym.Env):
    """
    One copy of the shared dynamics; its own reward uses the base costs ``(Q0, R0)``.

    :param family_kwargs: the family parameters (``heterogeneity`` is ignored here)
    """

    metadata = {"render_modes": []}

    def __init__(self, **family_kwargs: Any) -> None:
        p = _checked({**LQR_DEFAULTS, **family_kwargs})
        base = lqr_problem(1, **p)
        self.A, self.B = base.A, base.B
        self.Q, self.R = base.Q[0], base.R[0]
        self.noise_std = float(p["noise_std"])
        self.action_bound = float(p["action_bound"])
        self.max_episode_steps = int(p["max_episode_steps"])
        self.observation_space, self.action_space = _spaces(base.n_states, base.n_inputs, self.action_bound)
        self.state = np.zeros(base.n_states)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = self.np_random.standard_normal(len(self.A))
        self.steps = 0
        return self.state.astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -self.action_bound, self.action_bound)
        x = self.state
        reward = -(x @ self.Q @ x + u @ self.R @ u)
        self.state = self.A @ x + self.B @ u
        if self.noise_std > 0:
            self.state = self.state + self.noise_std * self.np_random.standard_normal(len(x))
        self.steps += 1
        return self.state.astype(np.float32), float(reward), False, self.steps >= self.max_episode_steps, {}


class LQRVectorEnv(gym.vector.VectorEnv):
    """
    ``num_envs`` copies of the shared dynamics in NumPy, with SAME_STEP auto-reset.

    ``info["final_obs"]`` holds this step's observations before any reset (valid where
    ``info["_final_obs"]`` is true). Rewards use the base costs ``(Q0, R0)``; the family's
    per-agent rewards are applied on top by ``FederatedVecEnv``.

    :param num_envs: number of copies
    :param family_kwargs: the family parameters
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    _np_random: np.random.Generator  # set in __init__ (never None, as VectorEnv allows)

    def __init__(self, num_envs: int = 1, **family_kwargs: Any) -> None:
        self.env = LQRDynamicsEnv(**family_kwargs)
        self.num_envs = num_envs
        self.single_observation_space = self.env.observation_space
        self.single_action_space = self.env.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.state = np.zeros((num_envs, len(self.env.A)))
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self._np_random = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        self.state = self._np_random.standard_normal(self.state.shape)
        self.steps[:] = 0
        return self.state.astype(np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        env = self.env
        u = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1), -env.action_bound, env.action_bound)
        x = self.state
        reward = -(np.einsum("ni,ij,nj->n", x, env.Q, x) + np.einsum("ni,ij,nj->n", u, env.R, u))
        x = x @ env.A.T + u @ env.B.T
        if env.noise_std > 0:
            x = x + env.noise_std * self._np_random.standard_normal(x.shape)
        self.steps += 1
        truncated = self.steps >= env.max_episode_steps
        terminated = np.zeros(self.num_envs, dtype=bool)
        obs = x.astype(np.float32)
        info: dict[str, Any] = {}
        if truncated.any():
            info["final_obs"] = obs.copy()
            info["_final_obs"] = truncated.copy()
            x[truncated] = self._np_random.standard_normal((int(truncated.sum()), x.shape[1]))
            self.steps[truncated] = 0
            obs[truncated] = x[truncated].astype(np.float32)
        self.state = x
        return obs, reward.astype(np.float32), terminated, truncated, info


def make_lqr_vector_env(
    n_agents: int, n_envs_per_agent: int, vectorization_mode: str = "auto", **family_kwargs: Any
) -> gym.vector.VectorEnv:
    """
    All agents' copies of the shared dynamics (agent-major), SAME_STEP auto-reset.

    :param n_agents: number of agents
    :param n_envs_per_agent: copies per agent
    :param vectorization_mode: ``"auto"``/``"native"`` (NumPy vector env) or ``"sync"``/``"async"``
    :param family_kwargs: the family parameters
    :return: the vector env
    """
    if vectorization_mode in ("auto", "native"):
        return LQRVectorEnv(n_agents * n_envs_per_agent, **family_kwargs)
    if vectorization_mode not in ("sync", "async"):
        raise ValueError(f"unknown vectorization_mode {vectorization_mode!r}: use 'auto', 'native', 'sync' or 'async'.")
    return vectorize_same_step(
        [lambda: LQRDynamicsEnv(**family_kwargs) for _ in range(n_agents * n_envs_per_agent)], vectorization_mode
    )


def make_lqr_agent_dynamics(agent: int, n_agents: int, **family_kwargs: Any) -> gym.Env:
    """
    Agent ``agent``'s copy of the shared dynamics (the same for every agent).

    :param agent: the agent's index
    :param n_agents: number of agents
    :param family_kwargs: the family parameters
    :return: the env
    """
    return LQRDynamicsEnv(**family_kwargs)


if "sb3_fedpg/LQR-v0" not in gym.registry:
    gym.register(id="sb3_fedpg/LQR-v0", entry_point=f"{__name__}:LQRDynamicsEnv")
register_family(
    FamilySpec(
        env_id="sb3_fedpg/HeteroLQR-v0",
        base_id="sb3_fedpg/LQR-v0",
        make_reward=LQRCostReward,
        family_kwargs=dict(LQR_DEFAULTS),
        make_vector_env=make_lqr_vector_env,
        make_agent_dynamics=make_lqr_agent_dynamics,
    )
)

"""
Federated vectorised environments: N agents x M sub-environments in one SB3 ``VecEnv``.

All agents share the dynamics; each agent has its own reward. Sub-environment ``e``
belongs to agent ``e // M`` (agent-major blocks), which is the layout ``FederatedPG``
relies on to give each agent its own slice of every batch.

Rewards are computed vectorised from ``(obs, action, next_obs, base_reward)`` by a
:class:`FederatedReward` that also receives the agent index of every sub-environment,
so a reward family costs one NumPy call per step for all agents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_fedpg.common.observations import VecObs, select_observations

# The reward protocol and the vectoriser live with the environments (envs never import common).
from sb3_fedpg.envs.vector import FederatedReward, vectorize_same_step

#: A reward for one agent, vectorised over that agent's sub-environments:
#: ``fn(obs, action, next_obs, reward) -> rewards``.
AgentRewardFn = Callable[[VecObs, np.ndarray, VecObs, np.ndarray], np.ndarray]


class PerAgentRewards:
    """
    Batched reward built from one callable per agent (each vectorised over that agent's envs).

    :param reward_fns: agent ``i``'s reward function at position ``i``
    """

    def __init__(self, reward_fns: Sequence[AgentRewardFn]) -> None:
        if len(reward_fns) == 0:
            raise ValueError("reward_fns is empty: pass one reward function per agent.")
        for i, fn in enumerate(reward_fns):
            if not callable(fn):
                raise TypeError(f"reward function of agent {i} is not callable: {fn!r}")
        self.reward_fns = list(reward_fns)

    def __call__(
        self, obs: VecObs, action: np.ndarray, next_obs: VecObs, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        out = np.empty(len(agent_ids), dtype=np.float64)  # converted (and checked) by check_rewards
        for i, fn in enumerate(self.reward_fns):
            idx = agent_ids == i
            value = np.asarray(fn(select_observations(obs, idx), action[idx], select_observations(next_obs, idx), reward[idx]))
            if value.shape != (int(idx.sum()),):
                raise ValueError(
                    f"reward function of agent {i} returned shape {value.shape}, expected ({int(idx.sum())},): "
                    "one reward per sub-environment of that agent."
                )
            out[idx] = value
        return out


def check_rewards(rewards: np.ndarray, n_envs: int, agent_ids: np.ndarray) -> np.ndarray:
    """
    Validate a batch of rewards, naming the agents at fault.

    :param rewards: what the reward function returned
    :param n_envs: number of sub-environments
    :param agent_ids: the agent of each sub-environment
    :return: the rewards as a float32 array of shape ``(n_envs,)``
    """
    rewards = np.asarray(rewards)
    if rewards.shape != (n_envs,):
        raise ValueError(f"the reward function returned shape {rewards.shape}, expected ({n_envs},): one reward per sub-env.")
    if rewards.dtype.kind not in "biuf":
        raise ValueError(f"the reward function returned dtype {rewards.dtype}, expected real numbers.")
    # Convert first, then check: a float64 reward of 1e300 is finite but becomes inf as float32.
    with np.errstate(over="ignore", invalid="ignore"):
        converted = rewards.astype(np.float32, copy=False)
    finite = np.isfinite(converted)
    if not finite.all():
        bad = sorted({int(a) for a in agent_ids[~finite]})
        overflow = bool(np.isfinite(rewards[~finite]).any()) if rewards.dtype.kind == "f" else False
        why = " (finite before the conversion to float32, which overflowed: |reward| > 3.4e38)" if overflow else ""
        raise ValueError(
            f"non-finite reward (NaN or inf) for agent(s) {bad}{why}; fix the reward function of those agents "
            "(the step was not used for training)."
        )
    return converted


def check_observations(obs: Any, agent_ids: np.ndarray) -> None:
    """
    Check that real-valued observations stay finite once converted to the policy's float32.

    :param obs: the observations of all sub-environments (first axis: sub-environment), or a dict of them (``Dict``
        observation spaces: every real-valued entry is checked)
    :param agent_ids: the agent of each sub-environment
    :raises ValueError: naming the agents whose observations are NaN/inf (or overflow float32)
    """
    if isinstance(obs, dict):
        for value in obs.values():
            check_observations(value, agent_ids)
        return
    if not isinstance(obs, np.ndarray) or obs.dtype.kind != "f" or len(obs) != len(agent_ids):
        return
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(obs.astype(np.float32, copy=False)).reshape(len(obs), -1).all(axis=1)
    if not finite.all():
        bad = sorted({int(a) for a in agent_ids[~finite]})
        raise ValueError(
            f"non-finite observation (NaN or inf, or beyond float32's range 3.4e38) from the env(s) of agent(s) {bad}; "
            "check those agents' environments (the step was not used for training)."
        )


class ObservationBoundsWarning(UserWarning):
    """Observations far outside the declared ``Box``: the space (or a missing normalisation) is probably wrong."""


#: How far outside a ``Box`` an observation may stray, in units of the box's width (at least 1), before a warning.
OUT_OF_BOUNDS_FACTOR = 10.0


def observations_far_out_of_bounds(obs: Any, space: gym.Space) -> str | None:
    """
    :param obs: observations of all sub-environments ``(n, *shape)``
    :param space: the declared observation space (only a ``Box`` with some finite bounds is checked)
    :return: a description of the worst violation, if any observation lies more than :data:`OUT_OF_BOUNDS_FACTOR`
        widths outside the box (e.g. pixels in 0..255 declared as ``Box(0, 1)``), else ``None``
    """
    if not isinstance(space, gym.spaces.Box) or not isinstance(obs, np.ndarray) or obs.dtype.kind not in "fiu":
        return None
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return None
    width = np.where(finite, np.maximum(high - low, 1.0), np.inf)
    margin = OUT_OF_BOUNDS_FACTOR * width
    values = obs.reshape(-1, *space.shape).astype(np.float64, copy=False)
    outside = np.maximum(np.where(finite, low - values, 0.0), np.where(finite, values - high, 0.0))
    worst = np.unravel_index(np.argmax(outside - margin), outside.shape)
    if outside[worst] <= margin[worst[1:]]:
        return None
    return (
        f"observation entry {tuple(int(i) for i in worst[1:])} = {values[worst]:.4g} while the declared space allows "
        f"[{low[worst[1:]]:.4g}, {high[worst[1:]]:.4g}]"
    )


class FederatedVecEnv(VecEnv):
    """
    SB3 ``VecEnv`` over a Gymnasium vector env of ``n_agents * n_envs_per_agent`` copies
    of the shared dynamics, with a per-agent reward.

    The Gymnasium vector env must auto-reset in ``SAME_STEP`` mode (the SB3 convention:
    the observation returned on ``done`` is the next episode's first one, the terminal
    observation is in ``info["terminal_observation"]``). Episode statistics in the
    ``info["episode"]`` entries use each agent's own reward, as ``VecMonitor`` would.

    :param venv: the Gymnasium vector env of the shared dynamics
    :param n_agents: number of agents ``N`` (must divide ``venv.num_envs``)
    :param reward_fn: the batched per-agent reward; ``None`` keeps the dynamics' own
        reward for every agent (identical agents)
    """

    def __init__(self, venv: gym.vector.VectorEnv, n_agents: int, reward_fn: FederatedReward | None = None) -> None:
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}.")
        if venv.num_envs % n_agents != 0:
            raise ValueError(
                f"{venv.num_envs} sub-environments cannot be split evenly between {n_agents} agents: "
                "use a number of envs that is a multiple of n_agents."
            )
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"the vector env auto-resets in {mode} mode; FederatedVecEnv needs AutoresetMode.SAME_STEP "
                "(pass vector_kwargs={'autoreset_mode': AutoresetMode.SAME_STEP} to gym.make_vec)."
            )
        self.venv = venv  # before VecEnv.__init__, which reads render_mode through get_attr
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.n_agents = n_agents
        self.n_envs_per_agent = venv.num_envs // n_agents
        self.agent_ids = np.repeat(np.arange(n_agents), self.n_envs_per_agent)
        self.reward_fn = reward_fn
        self._actions: np.ndarray | None = None
        self._obs: VecObs | None = None
        self._seed: int | None = None
        self._episode_returns = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._t_start = time.time()
        self.render_mode = getattr(venv, "render_mode", None)

    def reset(self) -> VecEnvObs:
        obs, _ = self.venv.reset(seed=self._seed)
        # Only the first reset after ``seed()`` is seeded, as in SB3's DummyVecEnv.
        self._seed = None
        self._obs = _as_vec_obs(obs)
        check_observations(self._obs, self.agent_ids)
        self._episode_returns[:] = 0.0
        self._episode_lengths[:] = 0
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return _copy_vec_obs(self._obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None and self._obs is not None, "call reset() before step()"
        actions = self._actions
        if isinstance(self.action_space, gym.spaces.Discrete):
            actions = actions.reshape(self.num_envs).astype(np.int64, copy=False)
        obs, base_reward, terminated, truncated, info = self.venv.step(actions)
        obs = _as_vec_obs(obs)
        dones = np.logical_or(terminated, truncated)
        next_obs = obs
        done_idx = np.flatnonzero(dones)
        if done_idx.size:
            next_obs = _with_final_observations(obs, info["final_obs"], done_idx)
        base_reward = np.asarray(base_reward)
        if self.reward_fn is None:
            rewards = base_reward  # converted to float32 and then checked by check_rewards
        else:
            # (dicts of arrays for a Dict observation space: such an env's reward function takes those)
            obs_before, obs_after = cast(np.ndarray, self._obs), cast(np.ndarray, next_obs)
            with np.errstate(over="ignore", invalid="ignore"):
                rewards = self.reward_fn(obs_before, actions, obs_after, base_reward.astype(np.float32), self.agent_ids)
        rewards = check_rewards(rewards, self.num_envs, self.agent_ids)
        check_observations(obs, self.agent_ids)

        self._episode_returns += rewards
        self._episode_lengths += 1
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in done_idx:
            infos[i]["terminal_observation"] = select_observations(next_obs, i)
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i]["episode"] = {
                "r": float(self._episode_returns[i]),
                "l": int(self._episode_lengths[i]),
                "t": round(time.time() - self._t_start, 6),
                "agent": int(self.agent_ids[i]),
            }
        self._episode_returns[done_idx] = 0.0
        self._episode_lengths[done_idx] = 0
        self._obs = obs
        return _copy_vec_obs(obs), rewards, dones, infos

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> list[int | None]:
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        # rgb_array frames (the render modes that give images)
        return list(cast("tuple[np.ndarray, ...]", frames)) if frames is not None else [None] * self.num_envs

    # The sub-environments of a Gymnasium vector env are not individually reachable in
    # general (a native vector env has none), so attribute access goes to the vector env.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # The episode statistics are Monitor's (info["episode"] with each agent's own return and length), so
        # SB3's evaluate_policy may count episodes from them as it does behind a Monitor.
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]


def _as_vec_obs(obs: Any) -> VecObs:
    # A Dict space's observations stay a dict of arrays (SB3's VecEnv convention), others one array.
    return {key: np.asarray(value) for key, value in obs.items()} if isinstance(obs, dict) else np.asarray(obs)


def _copy_vec_obs(obs: VecObs) -> VecObs:
    return {key: value.copy() for key, value in obs.items()} if isinstance(obs, dict) else obs.copy()


def _with_final_observations(obs: VecObs, final: Any, done_idx: np.ndarray) -> VecObs:
    """
    :param obs: the step's observations (the next episodes' first ones where an episode ended)
    :param final: ``info["final_obs"]``: an array, or an object array of per-env observations (dicts for a ``Dict`` space)
    :param done_idx: the sub-environments whose episode ended
    :return: a copy of ``obs`` with the final observations of the ended episodes
    """
    next_obs = _copy_vec_obs(obs)
    rows = [final[i] for i in done_idx] if final.dtype == object else None
    if isinstance(next_obs, dict):
        for key, value in next_obs.items():
            value[done_idx] = np.stack([row[key] for row in rows]) if rows is not None else final[key][done_idx]
    else:
        next_obs[done_idx] = np.stack(rows) if rows is not None else final[done_idx]
    return next_obs


def _spaces_equal(a: gym.Space, b: gym.Space) -> bool:
    return type(a) is type(b) and a == b


def make_shared_dynamics(
    env_id: str | Callable[[], gym.Env],
    num_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    vectorization_mode: str = "auto",
) -> gym.vector.VectorEnv:
    """
    Vectorise the shared dynamics with SAME_STEP auto-reset, natively where the env has
    a fast NumPy vector implementation.

    :param env_id: a registered Gymnasium id, or a factory returning one env
    :param num_envs: number of copies
    :param env_kwargs: keyword arguments for the env
    :param vectorization_mode: ``"auto"`` (native if available, else ``"sync"``), ``"native"``, ``"sync"`` or ``"async"``
    :return: a Gymnasium vector env
    """
    from sb3_fedpg.envs.native import make_native_vector_env

    env_kwargs = env_kwargs or {}
    if vectorization_mode not in ("auto", "native", "sync", "async"):
        raise ValueError(f"unknown vectorization_mode {vectorization_mode!r}: use 'auto', 'native', 'sync' or 'async'.")
    if isinstance(env_id, str) and vectorization_mode in ("auto", "native"):
        venv = make_native_vector_env(env_id, num_envs, **env_kwargs)
        if venv is not None:
            return venv
        if vectorization_mode == "native":
            raise ValueError(f"{env_id} has no native vector implementation; use vectorization_mode='sync'.")
    if isinstance(env_id, str):
        env_fns = [lambda: gym.make(env_id, **env_kwargs) for _ in range(num_envs)]
    else:
        env_fns = [env_id for _ in range(num_envs)]
    return vectorize_same_step(env_fns, vectorization_mode)


def make_federated_vec_env(
    env: str | Callable[[], gym.Env] | Sequence[Callable[[], gym.Env]],
    n_agents: int | None = None,
    n_envs_per_agent: int = 8,
    reward_fns: FederatedReward | Sequence[AgentRewardFn] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
    vectorization_mode: str = "auto",
) -> FederatedVecEnv:
    """
    Build the SB3 ``VecEnv`` of ``n_agents x n_envs_per_agent`` sub-environments.

    Three ways to say what the agents are:

    - a registered heterogeneous family id (e.g. ``"sb3_fedpg/HeteroCartPole-v0"``): its
      batched reward is used, ``env_kwargs`` carries ``heterogeneity`` etc.;
    - shared dynamics (an env id or factory) plus ``reward_fns``: one batched
      :class:`FederatedReward`, or one vectorised callable per agent; ``None`` means
      identical agents with the env's own reward;
    - a list with one env factory per agent (each agent its own reward wrapper): every
      agent's observation and action spaces must match agent 0's.

    :param env: env id, env factory, or list of per-agent env factories
    :param n_agents: number of agents ``N`` (inferred from a list of factories or from ``reward_fns``)
    :param n_envs_per_agent: sub-environments per agent (``M``, trajectories per gradient batch)
    :param reward_fns: the per-agent rewards over shared dynamics (see above)
    :param env_kwargs: keyword arguments for the env (family parameters such as ``heterogeneity``)
    :param seed: seed of the first reset
    :param vectorization_mode: ``"auto"``, ``"native"``, ``"sync"`` or ``"async"`` (see :func:`make_shared_dynamics`)
    :return: the federated vec env
    """
    _check_builder_arguments(env, n_agents, n_envs_per_agent, env_kwargs, seed, vectorization_mode)
    env_kwargs = dict(env_kwargs or {})

    if isinstance(env, Sequence) and not isinstance(env, str):
        return _from_agent_factories(list(env), n_agents, n_envs_per_agent, seed, vectorization_mode)

    family = None
    if isinstance(env, str):
        from sb3_fedpg.envs.families import get_family

        family = get_family(env)
    if family is not None:
        if reward_fns is not None:
            raise ValueError(f"{env} defines its own per-agent rewards; do not pass reward_fns as well.")
        n_agents = family.default_n_agents if n_agents is None else n_agents
        _check_family_kwarg_types(family.family_kwargs, env_kwargs)
        env_kwargs.pop("n_agents", None)
        reward_fns, base_id, base_kwargs = family.build(n_agents, **env_kwargs)
        if family.make_vector_env is not None:
            # Dynamics that differ between agents (transition heterogeneity): the family builds them.
            venv = family.make_vector_env(n_agents, n_envs_per_agent, vectorization_mode, **family.params(**env_kwargs))
        else:
            venv = make_shared_dynamics(base_id, n_agents * n_envs_per_agent, base_kwargs, vectorization_mode)
    else:
        if isinstance(reward_fns, Sequence):
            if n_agents is not None and n_agents != len(reward_fns):
                raise ValueError(f"n_agents={n_agents} but {len(reward_fns)} reward functions were given: pass one per agent.")
            n_agents = len(reward_fns)
            reward_fns = PerAgentRewards(reward_fns)
        n_agents = 1 if n_agents is None else n_agents
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}.")
        try:
            venv = make_shared_dynamics(env, n_agents * n_envs_per_agent, env_kwargs, vectorization_mode)
        except gym.error.Error as error:  # unknown id, missing dependency, ...: name the argument
            raise ValueError(f"env {env!r}: {error}") from error
    fed_env = FederatedVecEnv(venv, n_agents, reward_fns)
    fed_env.seed(seed)
    return fed_env


def _check_builder_arguments(
    env: Any, n_agents: Any, n_envs_per_agent: Any, env_kwargs: Any, seed: Any, vectorization_mode: Any
) -> None:
    """The arguments of :func:`make_federated_vec_env`, checked before anything is built (messages name them)."""
    import numbers

    def count(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= int(value) <= 1 << 20:
            raise ValueError(f"{name} must be >= 1 (an integer up to {1 << 20}), got {value!r}.")

    if n_agents is not None:
        count("n_agents", n_agents)
    count("n_envs_per_agent", n_envs_per_agent)
    if n_agents is not None and n_agents * n_envs_per_agent > 1 << 20:
        raise ValueError(f"n_agents x n_envs_per_agent = {n_agents * n_envs_per_agent} sub-environments is too many.")
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise TypeError(f"env_kwargs must be a dict of keyword arguments or None, got {type(env_kwargs).__name__}.")
    if env_kwargs is not None and not all(isinstance(key, str) for key in env_kwargs):
        raise TypeError(f"env_kwargs keys must be strings, got {sorted(map(repr, env_kwargs))}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**32):
        raise ValueError(f"seed must be None or an integer in [0, 2**32), got {seed!r}.")
    if not isinstance(vectorization_mode, str) or vectorization_mode not in ("auto", "native", "sync", "async"):
        raise ValueError(f"unknown vectorization_mode {vectorization_mode!r}: use 'auto', 'native', 'sync' or 'async'.")
    if isinstance(env, Sequence) and not isinstance(env, str):
        for i, factory in enumerate(env):
            if not callable(factory):
                raise TypeError(f"env factory of agent {i} is not callable: {factory!r}")
    elif not isinstance(env, str) and not callable(env):
        raise TypeError(
            f"env must be an env id, an env factory or a list of per-agent env factories, got {type(env).__name__}."
        )


def _check_family_kwarg_types(defaults: dict[str, Any], given: dict[str, Any]) -> None:
    # A family's numeric parameters (heterogeneity, ...) must be numbers; its own checks then judge the range.
    import numbers

    for key, value in given.items():
        default = defaults.get(key)
        numeric = isinstance(default, numbers.Real) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"env_kwargs[{key!r}] must be a number, got {type(value).__name__} {value!r}.")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise TypeError(f"env_kwargs[{key!r}] must be True or False, got {value!r}.")


def _from_agent_factories(
    factories: list[Callable[[], gym.Env]],
    n_agents: int | None,
    n_envs_per_agent: int,
    seed: int | None,
    vectorization_mode: str,
) -> FederatedVecEnv:
    if len(factories) == 0:
        raise ValueError("the list of per-agent env factories is empty.")
    if n_agents is not None and n_agents != len(factories):
        raise ValueError(f"n_agents={n_agents} but {len(factories)} env factories were given: pass one per agent.")
    probe = [fn() for fn in factories]
    for i, agent_env in enumerate(probe[1:], start=1):
        for what in ("observation_space", "action_space"):
            if not _spaces_equal(getattr(agent_env, what), getattr(probe[0], what)):
                raise ValueError(
                    f"agent {i} has {what} {getattr(agent_env, what)} but agent 0 has {getattr(probe[0], what)}: "
                    "all agents must share observation and action spaces."
                )
    for agent_env in probe:
        agent_env.close()
    env_fns = [fn for fn in factories for _ in range(n_envs_per_agent)]
    venv = vectorize_same_step(env_fns, vectorization_mode)
    fed_env = FederatedVecEnv(venv, len(factories), None)
    fed_env.seed(seed)
    return fed_env


class OneAgentReward:
    """
    A family's batched reward seen by a single agent: every sub-environment belongs to agent ``agent``.

    :param reward_fn: the family's batched reward (built for the whole federation)
    :param agent: the agent whose reward every sub-environment gets
    """

    def __init__(self, reward_fn: FederatedReward, agent: int) -> None:
        self.reward_fn = reward_fn
        self.agent = agent

    def __call__(self, obs, action, next_obs, reward, agent_ids):
        return self.reward_fn(obs, action, next_obs, reward, agent_ids + self.agent)


def make_agent_vec_env(
    env_id: str,
    agent: int,
    n_agents: int,
    n_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
) -> FederatedVecEnv:
    """
    Agent ``agent``'s own environment alone (its reward only, the federation's parameters): what a
    distributed agent or a local-only learner runs.

    :param env_id: a family id (or a plain Gymnasium id: identical agents)
    :param agent: the agent's index
    :param n_agents: number of agents in the federation (sets the agents' reward parameters)
    :param n_envs: sub-environments
    :param env_kwargs: the family's parameters (e.g. ``heterogeneity``)
    :param seed: seed of the first reset
    :return: a one-agent federated env
    """
    from sb3_fedpg.envs.families import get_family

    env_kwargs = dict(env_kwargs or {})
    family = get_family(env_id)
    if family is not None and family.make_vector_env is None:
        # Shared dynamics: the fast (native) vector env, with the family's reward for this agent only.
        reward_fn, base_id, base_kwargs = family.build(n_agents, **env_kwargs)
        return make_federated_vec_env(
            base_id, 1, n_envs, reward_fns=OneAgentReward(reward_fn, agent), env_kwargs=base_kwargs, seed=seed
        )
    if family is not None:
        # Per-agent dynamics (transition heterogeneity): the agent's own single env.
        kwargs = dict(agent=agent, n_agents=n_agents, **env_kwargs)
        return make_federated_vec_env([lambda: gym.make(env_id, **kwargs)], 1, n_envs, seed=seed)
    return make_federated_vec_env(env_id, 1, n_envs, env_kwargs=env_kwargs or None, seed=seed)

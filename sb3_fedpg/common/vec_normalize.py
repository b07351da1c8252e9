"""
Federated observation normalisation: SB3's ``VecNormalize`` with private per-agent statistics, merged every round.

In a federation the agents' observations are private, and so are the running statistics SB3's ``VecNormalize`` keeps
of them. :class:`FederatedVecNormalize` wraps a federated ``VecEnv`` (``N`` agents, each a contiguous block of ``M``
sub-environments) and gives every agent its own statistics:

* ``obs_rms``: the **global** statistics, as of the last merge (SB3's attribute: what ``sync_envs_normalization``
  copies, what :meth:`~FederatedVecNormalize.normalize_obs` and an evaluation env with ``training=False`` use);
* ``obs_deltas[i]``: agent ``i``'s statistics of the observations it saw **since the last merge** (starting empty);
* ``agent_obs_rms[i]``: what agent ``i`` normalises with while training: the global statistics updated with each of
  its own new observations, as SB3's ``VecNormalize`` updates continuously during rollouts (``global ⊕ delta_i``).

At every round boundary the server merges the global statistics with the participants' deltas by the exact parallel
variance (:func:`sb3_fedpg.common.fedmath.merge_running_moments`); every agent then holds the statistics of all
observations merged so far — what one ``RunningMeanStd`` fed all of them would hold — plus its own unmerged delta. Each
observation is counted once: a delta is cleared only when it has been merged. In-process the federated algorithms
call :meth:`~FederatedVecNormalize.merge` after every completed round; on Flower the agents send their deltas with
their round reply and the server sends the merged statistics back (:mod:`sb3_fedpg.flower`).

Rewards are not normalised (``norm_reward=True`` is refused): a scale per agent would weight the agents' objectives
unequally, and the reward statistics are private; ``normalize_advantage="shared"`` already gives every agent one
common scale.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from sb3_fedpg.common import fedmath

#: Why ``norm_reward=True`` is refused (the message of the ``ValueError``).
NORM_REWARD_REFUSAL = (
    "FederatedVecNormalize does not normalise rewards (norm_reward=True): a return scale per agent would weight the "
    "agents' objectives unequally (the federation must optimise the average return), and one scale pooled over the "
    "agents would need their private reward statistics. Keep norm_reward=False; normalize_advantage='shared' (the "
    "default) already gives every agent one common advantage scale."
)

#: Why a plain ``VecNormalize`` is refused for a federation of more than one agent.
POOLED_VEC_NORMALIZE_REFUSAL = (
    "the env is wrapped in SB3's VecNormalize, which pools every agent's observations (and rewards) in one running "
    "mean/std: in a federation those statistics are private to each agent. Wrap the federated env in "
    "sb3_fedpg.common.vec_normalize.FederatedVecNormalize instead (per-agent statistics merged exactly at every round; "
    "observations only), or use VecNormalize(..., training=False) with fixed statistics."
)

#: Statistics of one observation space: one ``RunningMeanStd``, or one per normalised key of a ``Dict`` space.
ObsStats = RunningMeanStd | dict[str, RunningMeanStd]


def _items(stats: ObsStats) -> dict[str, RunningMeanStd]:
    # A Box space's statistics under the key "" (the wire format and the state use the same keys).
    return stats if isinstance(stats, dict) else {"": stats}


def rms_moments(rms: RunningMeanStd) -> fedmath.RunningMoments:
    """
    :param rms: SB3 running statistics
    :return: their ``(count, mean, M2)`` (``M2 = count · var``)
    """
    return float(rms.count), np.array(rms.mean, np.float64), np.asarray(rms.var, np.float64) * float(rms.count)


def set_rms_moments(rms: RunningMeanStd, moments: fedmath.RunningMoments) -> None:
    """
    :param rms: SB3 running statistics, overwritten
    :param moments: ``(count, mean, M2)``; a count of 0 gives SB3's empty statistics (mean 0, variance 1)
    """
    count, mean, m2 = moments
    rms.count = float(count)
    rms.mean = np.array(mean, np.float64)
    rms.var = np.array(m2, np.float64) / count if count > 0 else np.ones_like(rms.mean)


def _empty_like(stats: ObsStats) -> ObsStats:
    # A delta: no observations yet (count 0; SB3's update then gives exactly the batch's statistics).
    if isinstance(stats, dict):
        return {key: RunningMeanStd(epsilon=0.0, shape=rms.mean.shape) for key, rms in stats.items()}
    return RunningMeanStd(epsilon=0.0, shape=stats.mean.shape)


class FederatedVecNormalize(VecNormalize):
    """
    SB3's ``VecNormalize`` for a federation: per-agent observation statistics, merged exactly at every round
    (see the module's documentation for the semantics). With one agent it normalises as ``VecNormalize`` does.

    :param venv: the federated vectorized environment to wrap (agent ``i`` owns sub-environments ``i·M … (i+1)·M − 1``)
    :param training: update the statistics (``False``: every agent normalises with the global statistics, fixed)
    :param norm_obs: normalise observations
    :param norm_reward: must be ``False`` (see :data:`NORM_REWARD_REFUSAL`); kept for SB3's signature
    :param clip_obs: max absolute value of a normalised observation
    :param clip_reward: unused (rewards are not normalised); kept for SB3's signature
    :param gamma: unused (rewards are not normalised); kept for SB3's signature
    :param epsilon: added to the variance to avoid division by zero
    :param norm_obs_keys: the keys of a ``Dict`` observation space to normalise (``None``: all, each a ``Box``)
    :param n_agents: number of agents ``N`` (``None``: the env's ``n_agents``, 1 for a plain ``VecEnv``)
    """

    obs_rms: ObsStats  # type: ignore[assignment]  # SB3 declares one RunningMeanStd; a dict for Dict spaces there too

    def __init__(
        self,
        venv: VecEnv,
        training: bool = True,
        norm_obs: bool = True,
        norm_reward: bool = False,
        clip_obs: float = 10.0,
        clip_reward: float = 10.0,
        gamma: float = 0.99,
        epsilon: float = 1e-8,
        norm_obs_keys: list[str] | None = None,
        n_agents: int | None = None,
    ):
        if norm_reward:
            raise ValueError(NORM_REWARD_REFUSAL)
        n_agents = int(n_agents if n_agents is not None else getattr(venv, "n_agents", 1))
        if n_agents < 1 or venv.num_envs % n_agents != 0:
            raise ValueError(f"{venv.num_envs} sub-environments cannot be split evenly between n_agents={n_agents} agents.")
        super().__init__(venv, training, norm_obs, False, clip_obs, clip_reward, gamma, epsilon, norm_obs_keys)
        self.n_agents = n_agents
        self._reset_agent_statistics()

    @property
    def n_envs_per_agent(self) -> int:
        """Sub-environments per agent ``M``."""
        return self.num_envs // self.n_agents

    def _reset_agent_statistics(self) -> None:
        #: agent i's statistics while training (global ⊕ its delta), and its delta since the last merge
        self.agent_obs_rms: list[ObsStats] = []
        self.obs_deltas: list[ObsStats] = []
        if self.norm_obs:
            self.agent_obs_rms = [copy.deepcopy(self.obs_rms) for _ in range(self.n_agents)]
            self.obs_deltas = [_empty_like(self.obs_rms) for _ in range(self.n_agents)]

    # ---------------------------------------------------------------- normalising
    def _rows(self, agent: int) -> slice:
        m = self.n_envs_per_agent
        return slice(agent * m, (agent + 1) * m)

    def _normalize_with(self, obs: Any, stats: ObsStats) -> Any:
        if isinstance(obs, dict):
            assert isinstance(stats, dict) and self.norm_obs_keys is not None
            out = {key: np.array(value, copy=True) for key, value in obs.items()}
            for key in self.norm_obs_keys:
                out[key] = self._normalize_obs(obs[key], stats[key]).astype(np.float32)
            return out
        assert isinstance(stats, RunningMeanStd)
        return self._normalize_obs(obs, stats).astype(np.float32)

    def agent_statistics(self, agent: int) -> ObsStats:
        """
        :param agent: the agent's index
        :return: the statistics agent ``agent`` normalises with now: its own (``global ⊕ delta``) while training,
            the global ones otherwise
        """
        return self.agent_obs_rms[agent] if self.training else self.obs_rms

    def normalize_agent_obs(self, obs: Any, agent: int) -> Any:
        """
        Normalise observations of one agent with :meth:`agent_statistics` (no update).

        :param obs: observations (a batch, or one; a dict for a ``Dict`` space)
        :param agent: the agent's index
        :return: the normalised observations
        """
        return self._normalize_with(obs, self.agent_statistics(agent)) if self.norm_obs else copy.deepcopy(obs)

    def _update_and_normalize(self, obs: Any) -> Any:
        if not self.norm_obs:
            return copy.deepcopy(obs)
        if not self.training:
            return self.normalize_obs(obs)
        pieces = []
        for i in range(self.n_agents):
            rows = self._rows(i)
            block = {key: value[rows] for key, value in obs.items()} if isinstance(obs, dict) else obs[rows]
            for key, rms in _items(self.agent_obs_rms[i]).items():
                # In float64 (SB3 takes the batch's mean in the observations' dtype): a float32 batch mean would make
                # the statistics depend on how the observations were split between agents and rounds.
                part = np.asarray(block[key] if key else block, np.float64)
                rms.update(part)  # as SB3: update, then normalise with statistics that include the batch
                _items(self.obs_deltas[i])[key].update(part)
            pieces.append(self._normalize_with(block, self.agent_obs_rms[i]))
        if isinstance(obs, dict):
            return {key: np.concatenate([p[key] for p in pieces]) for key in obs}
        return np.concatenate(pieces)

    def reset(self) -> np.ndarray | dict[str, np.ndarray]:
        """
        Reset all environments (in training mode the first observations update each agent's statistics).

        :return: the first observations, normalised
        """
        obs = self.venv.reset()
        assert isinstance(obs, np.ndarray | dict)
        self.old_obs = obs
        self.returns = np.zeros(self.num_envs)
        return self._update_and_normalize(obs)

    def step_wait(self) -> VecEnvStepReturn:
        """
        Step the environments; each agent's observations update and are normalised with its own statistics (the
        terminal observations too, without an update, as in SB3). Rewards are passed through (as float32).

        :return: observations, rewards, dones, infos
        """
        obs, rewards, dones, infos = self.venv.step_wait()
        assert isinstance(obs, np.ndarray | dict)
        self.old_obs = obs
        self.old_reward = rewards
        obs = self._update_and_normalize(obs)
        for idx in np.flatnonzero(dones):
            if "terminal_observation" in infos[idx]:
                infos[idx]["terminal_observation"] = self.normalize_agent_obs(
                    infos[idx]["terminal_observation"], int(idx) // self.n_envs_per_agent
                )
        self.returns[dones] = 0
        return obs, self.normalize_reward(rewards), dones, infos

    # ---------------------------------------------------------------- merging
    def global_moments(self) -> dict[str, fedmath.RunningMoments]:
        """:return: the global statistics as ``(count, mean, M2)`` by key (``""`` for a ``Box`` space)"""
        return {key: rms_moments(rms) for key, rms in _items(self.obs_rms).items()}

    def delta_moments(self, agent: int) -> dict[str, fedmath.RunningMoments]:
        """
        :param agent: the agent's index
        :return: its statistics since the last merge as ``(count, mean, M2)`` by key (``""`` for a ``Box`` space)
        """
        return {key: rms_moments(rms) for key, rms in _items(self.obs_deltas[agent]).items()}

    def set_global_moments(self, moments: dict[str, fedmath.RunningMoments], merged: Any = None, agents: bool = True) -> None:
        """
        Take new global statistics from the server; clear the deltas that are part of them.

        :param moments: the merged global statistics by key (:meth:`global_moments`' format)
        :param merged: boolean mask of the agents whose deltas the new statistics include (their deltas are cleared;
            ``None``: all)
        :param agents: also rebuild every agent's statistics (``False``: only the global ones change, e.g. for an
            evaluation)
        """
        if not self.norm_obs:
            return
        stats = _items(self.obs_rms)
        if set(moments) != set(stats):
            raise ValueError(f"statistics for keys {sorted(moments)}, expected {sorted(stats)}")
        for key, value in moments.items():
            set_rms_moments(stats[key], value)
        if not agents:
            return
        mask = np.ones(self.n_agents, bool) if merged is None else np.asarray(merged, bool).reshape(self.n_agents)
        for i in range(self.n_agents):
            if mask[i]:
                self.obs_deltas[i] = _empty_like(self.obs_rms)
                self.agent_obs_rms[i] = copy.deepcopy(self.obs_rms)
            else:  # global ⊕ the agent's delta, still to be merged
                agent_stats = copy.deepcopy(self.obs_rms)
                for key, rms in _items(agent_stats).items():
                    parts = [rms_moments(rms), rms_moments(_items(self.obs_deltas[i])[key])]
                    set_rms_moments(rms, fedmath.merge_running_moments(parts))
                self.agent_obs_rms[i] = agent_stats

    def merge(self, participants: Any = None) -> None:
        """
        The round boundary, in-process: the server's merge of the global statistics with the participants' deltas
        (:func:`fedmath.merge_running_moments`), handed back to every agent. An agent that did not take part keeps
        its delta for a later merge. Nothing happens in evaluation mode (``training=False``) or without ``norm_obs``.

        :param participants: boolean mask of the round's participants (``None``: all)
        """
        if not (self.training and self.norm_obs):
            return
        mask = np.ones(self.n_agents, bool) if participants is None else np.asarray(participants, bool).reshape(-1)
        merged = {
            key: fedmath.merge_running_moments([value] + [self.delta_moments(i)[key] for i in range(self.n_agents) if mask[i]])
            for key, value in self.global_moments().items()
        }
        self.set_global_moments(merged, mask)

    # ---------------------------------------------------------------- state
    def statistics_state(self) -> dict[str, Any]:
        """
        :return: every statistic as plain arrays and floats (global, deltas, agents' own), for an agent's memory
            (:func:`sb3_fedpg.flower.agent.flatten_state`)
        """

        def plain(stats: ObsStats) -> dict[str, Any]:
            return {
                key: {"count": float(r.count), "mean": r.mean.copy(), "var": r.var.copy()} for key, r in _items(stats).items()
            }

        return {
            "global": plain(self.obs_rms),
            "deltas": [plain(s) for s in self.obs_deltas],
            "agents": [plain(s) for s in self.agent_obs_rms],
        }

    def load_statistics_state(self, state: dict[str, Any]) -> None:
        """
        :param state: the output of :meth:`statistics_state`
        """

        def restore(stats: ObsStats, plain: dict[str, Any]) -> None:
            for key, rms in _items(stats).items():
                rms.count = float(plain[key]["count"])
                rms.mean = np.array(plain[key]["mean"], np.float64)
                rms.var = np.array(plain[key]["var"], np.float64)

        restore(self.obs_rms, state["global"])
        for stats, plain in zip(self.obs_deltas, state["deltas"], strict=True):
            restore(stats, plain)
        for stats, plain in zip(self.agent_obs_rms, state["agents"], strict=True):
            restore(stats, plain)

    def set_venv(self, venv: VecEnv) -> None:
        """
        Wrap ``venv`` after :meth:`load`. An env with another number of agents (an evaluation env) starts every agent
        from the global statistics; unmerged deltas are then dropped, with a warning.

        :param venv: the env
        """
        super().set_venv(venv)
        n_agents = int(getattr(venv, "n_agents", self.n_agents if venv.num_envs % self.n_agents == 0 else 1))
        if venv.num_envs % n_agents != 0:
            raise ValueError(f"{venv.num_envs} sub-environments cannot be split between n_agents={n_agents} agents.")
        if n_agents != self.n_agents:
            if self.norm_obs and any(m[0] > 0 for i in range(self.n_agents) for m in self.delta_moments(i).values()):
                warnings.warn(
                    f"the statistics were saved for {self.n_agents} agents with observations not yet merged; the env "
                    f"has {n_agents} agents, so every agent starts from the merged (global) statistics.",
                    stacklevel=2,
                )
            self.n_agents = n_agents
            self._reset_agent_statistics()

    @staticmethod
    def load(load_path: str, venv: VecEnv) -> FederatedVecNormalize:
        """
        Load a saved :class:`FederatedVecNormalize` (:meth:`save`) around ``venv``.

        :param load_path: the file
        :param venv: the env to wrap
        :return: the wrapper
        :raises TypeError: when the file holds a plain ``VecNormalize``
        """
        loaded = VecNormalize.load(load_path, venv)
        if not isinstance(loaded, FederatedVecNormalize):
            raise TypeError(f"{load_path} holds a {type(loaded).__name__}, not a FederatedVecNormalize.")
        return loaded


def find_vec_normalize(env: Any) -> VecNormalize | None:
    """
    :param env: an env, possibly wrapped
    :return: the first ``VecNormalize`` (or :class:`FederatedVecNormalize`) in its wrapper chain, ``None`` if none
    """
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, VecNormalize):
            return env
        env = env.venv
    return None


def check_normalization(env: Any, n_agents: int | None) -> None:
    """
    Refuse a plain ``VecNormalize`` that would pool several agents' statistics while training.

    :param env: the env given to a federated algorithm
    :param n_agents: the model's number of agents
    :raises ValueError: :data:`POOLED_VEC_NORMALIZE_REFUSAL`
    """
    wrapper = find_vec_normalize(env)
    if wrapper is None or isinstance(wrapper, FederatedVecNormalize) or (n_agents or 1) <= 1:
        return
    if wrapper.training and (wrapper.norm_obs or wrapper.norm_reward):
        raise ValueError(f"{n_agents} agents: {POOLED_VEC_NORMALIZE_REFUSAL}")


# ---------------------------------------------------------------- on the wire (Flower messages)
def _wire_name(what: str, key: str, prefix: str) -> str:
    return f"{prefix}-{what}" + (f".{key}" if key else "")


def moments_to_arrays(moments: dict[str, fedmath.RunningMoments], prefix: str = "obs") -> dict[str, np.ndarray]:
    """
    Statistics as named float64 arrays for a message: ``<prefix>-count``, ``<prefix>-mean``, ``<prefix>-m2`` (with
    ``.<key>`` appended for each key of a ``Dict`` space).

    :param moments: ``(count, mean, M2)`` by key (``""`` for a ``Box`` space)
    :param prefix: ``obs`` (the server's merged statistics) or ``obs-delta`` (an agent's new ones)
    :return: the arrays by name
    """
    out: dict[str, np.ndarray] = {}
    for key, (count, mean, m2) in moments.items():
        out[_wire_name("count", key, prefix)] = np.array([count], np.float64)
        out[_wire_name("mean", key, prefix)] = np.ascontiguousarray(mean, np.float64)
        out[_wire_name("m2", key, prefix)] = np.ascontiguousarray(m2, np.float64)
    return out


def moments_from_arrays(
    arrays: Any, expected: dict[str, fedmath.RunningMoments], prefix: str = "obs"
) -> tuple[dict[str, fedmath.RunningMoments] | None, str | None]:
    """
    Read and check statistics sent by :func:`moments_to_arrays` (never raises on what a peer sent).

    :param arrays: named arrays (NumPy arrays, or anything with ``.numpy()``)
    :param expected: statistics of the right keys and shapes (e.g. the receiver's own)
    :param prefix: as given to :func:`moments_to_arrays`
    :return: ``(moments, None)``, or ``(None, what is wrong)``
    """
    out: dict[str, fedmath.RunningMoments] = {}
    for key, (_, mean_ref, _) in expected.items():
        try:
            values = []
            for what in ("count", "mean", "m2"):
                name = _wire_name(what, key, prefix)
                value = arrays[name]
                values.append(np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float64))
        except (KeyError, TypeError, ValueError) as error:
            return None, f"no valid {_wire_name('count', key, prefix)}/-mean/-m2 ({type(error).__name__}: {error})"
        count, mean, m2 = values
        shape = np.shape(mean_ref)
        if count.shape != (1,) or not np.isfinite(count[0]) or count[0] < 0:
            return None, f"{prefix} count must be one finite number >= 0, got {count.tolist()[:3]}"
        if mean.shape != shape or m2.shape != shape:
            return None, f"{prefix} statistics of shapes {mean.shape}/{m2.shape}, expected {shape}"
        if not (np.isfinite(mean).all() and np.isfinite(m2).all()) or (m2 < 0).any():
            return None, f"{prefix} statistics are not finite, or M2 < 0"
        out[key] = (float(count[0]), mean, m2)
    return out, None

"""
Heterogeneous MuJoCo family (needs ``pip install "sb3-fedpg[mujoco]"``, i.e. ``gymnasium[mujoco]``).

Importing this module only registers the id; MuJoCo itself is imported when an env is made,
so a missing optional dependency never breaks ``import sb3_fedpg``. MuJoCo writes
``MUJOCO_LOG.TXT`` in the working directory when it logs a warning.

``sb3_fedpg/HeteroHalfCheetah-v0``
    HalfCheetah-v5 dynamics. Agent ``i`` wants to run at its own target forward velocity
    ``v_i = 2 + 1.5 · h · u_i`` (0.5 to 3.5 at ``h = 1``; ``u_i`` evenly spaced in ``[-1, 1]``):

    ``r_i = −|v − v_i| − 0.1 ‖a‖²``

    with ``v`` Gymnasium's forward velocity (finite difference of the torso's x over one
    step), recovered exactly from its reward ``v − 0.1 ‖a‖²``. ``h = 0``: every agent
    wants 2 (the classic "HalfCheetahVel" task of meta-RL, one goal per agent).
"""

from __future__ import annotations

import numpy as np
from sb3_fedpg.envs.families import FamilySpec, register_family
from sb3_fedpg.envs.goals import spread_targets


class HalfCheetahVelocityReward:
    """
    Batched reward of ``HeteroHalfCheetah``: run at your own target velocity.

    :param n_agents: number of agents
    :param heterogeneity: spread of the targets, 0 (all 2) to 1 (0.5 to 3.5)
    :param center: the target velocity at ``h = 0``
    :param spread: half-range of the targets at ``h = 1``
    """

    #: HalfCheetah-v5's default control cost weight (the dynamics are made with default kwargs)
    ctrl_cost_weight = 0.1

    def __init__(self, n_agents: int, heterogeneity: float = 1.0, center: float = 2.0, spread: float = 1.5) -> None:
        self.targets = spread_targets(n_agents, heterogeneity, spread, center)

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        ctrl_cost = self.ctrl_cost_weight * np.square(np.asarray(action, dtype=np.float32).reshape(len(obs), -1)).sum(1)
        velocity = reward + ctrl_cost
        return (-np.abs(velocity - self.targets[agent_ids]) - ctrl_cost).astype(np.float32)


register_family(
    FamilySpec(
        env_id="sb3_fedpg/HeteroHalfCheetah-v0",
        base_id="HalfCheetah-v5",
        make_reward=HalfCheetahVelocityReward,
        family_kwargs={"heterogeneity": 1.0},
    )
)

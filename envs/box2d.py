"""
Heterogeneous Box2D family (needs ``pip install "sb3-fedpg[box2d]"``, i.e. ``gymnasium[box2d]``).

Importing this module only registers the id; Box2D itself is imported when an env is made,
so a missing optional dependency never breaks ``import sb3_fedpg``.

``sb3_fedpg/HeteroLunarLander-v0``
    LunarLander-v3 dynamics (discrete actions; ``continuous=True`` for the continuous
    version). Agent ``i`` prefers to land at its own horizontal target ``x_i = 0.5 · h · u_i``
    (normalised coordinates, the pad spans ``|x| ≤ 0.2``; ``u_i`` evenly spaced in ``[-1, 1]``).
    Gymnasium's reward is a potential difference ``Φ(s') − Φ(s)`` minus fuel, with
    ``Φ(s) = −100 √(x² + y²) − 100 ‖v‖ − 100 |angle| + 10 (leg contacts)``; agent ``i``'s
    potential measures the distance to its own target instead:

    ``r_i = r − 100 (√((x' − x_i)² + y'²) − √(x'² + y'²)) + 100 (√((x − x_i)² + y²) − √(x² + y²))``

    on non-terminal steps; the terminal ±100 (crash / rest) and the fuel costs are
    Gymnasium's. ``h = 0``: every agent gets Gymnasium's reward exactly.
"""

from __future__ import annotations

import numpy as np
from sb3_fedpg.envs.families import FamilySpec, register_family
from sb3_fedpg.envs.goals import spread_targets


def _distance(obs: np.ndarray, target_x: np.ndarray | float) -> np.ndarray:
    return np.sqrt(np.square(obs[:, 0] - target_x) + np.square(obs[:, 1]))


class LunarLanderTargetReward:
    """
    Batched reward of ``HeteroLunarLander``: land near your own horizontal target.

    :param n_agents: number of agents
    :param heterogeneity: spread of the targets, 0 (all at the pad centre) to 1 (±0.5)
    """

    #: Gymnasium's terminal rewards (crash, at rest); they replace the whole step reward there
    terminal_reward = 100.0

    def __init__(self, n_agents: int, heterogeneity: float = 1.0) -> None:
        self.targets = spread_targets(n_agents, heterogeneity, 0.5)

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        target = self.targets[agent_ids]
        # Re-centre the distance term of the shaping potential on the agent's target.
        shift = -100.0 * (_distance(next_obs, target) - _distance(next_obs, 0.0))
        shift += 100.0 * (_distance(obs, target) - _distance(obs, 0.0))
        # The reward fn sees no termination flag; Gymnasium's terminal reward is exactly ±100.
        terminal = np.abs(reward) == self.terminal_reward
        return np.where(terminal, reward, reward + shift).astype(np.float32)


register_family(
    FamilySpec(
        env_id="sb3_fedpg/HeteroLunarLander-v0",
        base_id="LunarLander-v3",
        make_reward=LunarLanderTargetReward,
        family_kwargs={"heterogeneity": 1.0, "continuous": False},
        base_kwargs=("continuous",),
    )
)

"""
Random and structured federated tabular MDPs with a heterogeneity knob.

Both generators interpolate linearly between a reward table shared by all agents
(``heterogeneity = 0``: identical agents) and one independent table per agent
(``heterogeneity = 1``): ``R_i = (1 − h) R_common + h R_i^own``. :func:`garnet` also has a
*transition*-heterogeneity knob ``κ``: ``P_i = (1 − κ) P + κ P̃_i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sb3_fedpg.tabular.mdp import FederatedTabularMDP

#: Gridworld actions as (row, column) moves: up, right, down, left.
GRID_MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])


def _check_heterogeneity(heterogeneity: float) -> float:
    heterogeneity = float(heterogeneity)
    if not 0.0 <= heterogeneity <= 1.0:
        raise ValueError(f"heterogeneity must lie in [0, 1], got {heterogeneity}")
    return heterogeneity


def _garnet_kernel(rng: np.random.Generator, n_states: int, n_actions: int, branching: int) -> np.ndarray:
    # for each (s, a): `branching` distinct next states, Dirichlet(1) probabilities
    next_states = np.argsort(rng.random((n_states, n_actions, n_states)), axis=-1)[..., :branching]
    probs = rng.dirichlet(np.ones(branching), size=(n_states, n_actions))
    transitions = np.zeros((n_states, n_actions, n_states))
    np.put_along_axis(transitions, next_states, probs, axis=-1)
    return transitions


def _check_positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def garnet(
    n_states: int = 10,
    n_actions: int = 4,
    branching: int = 3,
    n_agents: int = 8,
    heterogeneity: float = 1.0,
    gamma: float = 0.9,
    seed: int | None = 0,
    transition_heterogeneity: float = 0.0,
) -> FederatedTabularMDP:
    """
    A Garnet random MDP (Archibald et al., 1995) with per-agent rewards (and optionally transitions).

    For every ``(s, a)`` the next state is one of ``branching`` distinct states drawn
    uniformly, with probabilities from a uniform random partition of ``[0, 1]``
    (Dirichlet(1, …, 1)). Rewards are uniform in ``[0, 1]`` per ``(s, a)``: a common table
    and one table per agent, mixed by ``heterogeneity``. The initial distribution is uniform.

    The dynamics depend on ``seed`` only (not on ``n_agents`` or ``heterogeneity``), and
    agent ``i``'s own table does not depend on ``n_agents``, so growing ``N`` adds agents to
    the same population and sweeping ``heterogeneity`` keeps everything else fixed.

    Transition heterogeneity ``κ`` (beyond the paper): agent ``i``'s kernel is
    ``P_i = (1 − κ) P + κ P̃_i``, with ``P`` the shared Garnet kernel above and ``P̃_i`` an
    independent Garnet kernel of agent ``i`` (same branching; its own random stream, so it
    depends neither on ``N`` nor on ``κ``). ``κ = 0`` returns the shared-``P`` MDP, identical
    to the one without the argument; ``κ > 0`` gives ``transitions`` of shape ``(N, S, A, S)``.

    :param n_states: ``S``
    :param n_actions: ``A``
    :param branching: number of possible next states per ``(s, a)``, in ``[1, S]``
    :param n_agents: ``N``
    :param heterogeneity: ``0`` identical rewards, ``1`` independent rewards per agent
    :param gamma: discount factor
    :param seed: seed of the ``np.random.Generator``
    :param transition_heterogeneity: ``κ``: ``0`` shared dynamics, ``1`` an independent Garnet kernel per agent
    :return: the federated MDP
    """
    n_states = _check_positive("n_states", n_states)
    n_actions = _check_positive("n_actions", n_actions)
    n_agents = _check_positive("n_agents", n_agents)
    branching = _check_positive("branching", branching)
    if branching > n_states:
        raise ValueError(f"branching must be at most n_states = {n_states}, got {branching}")
    heterogeneity = _check_heterogeneity(heterogeneity)
    kappa = float(transition_heterogeneity)
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"transition_heterogeneity must lie in [0, 1], got {transition_heterogeneity}")
    # independent streams so that each part is reproducible on its own (the fourth, for the
    # agents' own kernels, leaves the first three exactly as they were without it)
    dyn_rng, common_rng, agent_seq, kernel_seq = np.random.SeedSequence(seed).spawn(4)
    transitions = _garnet_kernel(np.random.default_rng(dyn_rng), n_states, n_actions, branching)
    if kappa > 0:
        own_kernels = np.stack(
            [_garnet_kernel(np.random.default_rng(s), n_states, n_actions, branching) for s in kernel_seq.spawn(n_agents)]
        )
        transitions = (1.0 - kappa) * transitions[None] + kappa * own_kernels
    common = np.random.default_rng(common_rng).random((n_states, n_actions))
    own = np.stack([np.random.default_rng(s).random((n_states, n_actions)) for s in agent_seq.spawn(n_agents)])
    rewards = (1.0 - heterogeneity) * common[None] + heterogeneity * own
    rho = np.full(n_states, 1.0 / n_states)
    return FederatedTabularMDP(transitions, rewards, rho, gamma)


def gridworld(
    height: int = 5,
    width: int = 5,
    n_agents: int = 4,
    heterogeneity: float = 1.0,
    slip: float = 0.1,
    wall_density: float = 0.1,
    walls: Sequence[tuple[int, int]] | None = None,
    goals: Sequence[tuple[int, int]] | None = None,
    gamma: float = 0.9,
    seed: int | None = 0,
) -> FederatedTabularMDP:
    """
    A slippery gridworld with shared walls and a goal per agent.

    States are the free cells in row-major order (walls are not states). Actions are up,
    right, down, left; a move into a wall or off the grid leaves the agent in place. With
    probability ``slip`` the action is replaced by a uniformly random one. Agent ``i`` gets
    reward ``(1 − h)·P(reach common goal) + h·P(reach own goal)`` for the step, i.e. the
    expected indicator of landing on the goal (the goal is not absorbing, because the
    dynamics are shared). The initial distribution is uniform over free cells.

    :param height: number of rows
    :param width: number of columns
    :param n_agents: ``N``
    :param heterogeneity: ``h``: ``0`` all agents pursue the common goal, ``1`` each its own
    :param slip: probability that the chosen action is replaced by a random one
    :param wall_density: fraction of cells turned into walls when ``walls`` is ``None``
    :param walls: explicit wall cells ``(row, col)``; overrides ``wall_density``
    :param goals: explicit per-agent goal cells (``n_agents`` of them); the common goal is
        then the first one. Random free cells when ``None``
    :param gamma: discount factor
    :param seed: seed of the ``np.random.Generator``
    :return: the federated MDP
    """
    height = _check_positive("height", height)
    width = _check_positive("width", width)
    n_agents = _check_positive("n_agents", n_agents)
    heterogeneity = _check_heterogeneity(heterogeneity)
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must lie in [0, 1], got {slip}")
    if not 0.0 <= wall_density < 1.0:
        raise ValueError(f"wall_density must lie in [0, 1), got {wall_density}")
    rng = np.random.default_rng(seed)
    is_wall = np.zeros((height, width), dtype=bool)
    if walls is not None:
        for r, c in walls:
            if not (0 <= r < height and 0 <= c < width):
                raise ValueError(f"wall {(r, c)} lies outside the {height}x{width} grid")
            is_wall[r, c] = True
    else:
        n_walls = round(wall_density * height * width)
        is_wall.flat[rng.choice(height * width, size=n_walls, replace=False)] = True
    free = np.flatnonzero(~is_wall)
    if free.size == 0:
        raise ValueError("the gridworld has no free cell")
    index = np.full(height * width, -1)
    index[free] = np.arange(free.size)
    n_states = free.size
    rows, cols = np.divmod(free, width)
    # deterministic successor of each (state, action), vectorised over both
    target_r = rows[:, None] + GRID_MOVES[None, :, 0]
    target_c = cols[:, None] + GRID_MOVES[None, :, 1]
    inside = (target_r >= 0) & (target_r < height) & (target_c >= 0) & (target_c < width)
    target_cell = np.where(inside, target_r.clip(0, height - 1) * width + target_c.clip(0, width - 1), 0)
    blocked = ~inside | is_wall.flat[target_cell]
    successor = np.where(blocked, np.arange(n_states)[:, None], index[target_cell])
    n_actions = len(GRID_MOVES)
    deterministic = np.zeros((n_states, n_actions, n_states))
    np.put_along_axis(deterministic, successor[..., None], 1.0, axis=-1)
    # slip: the executed action is uniform with probability `slip`
    transitions = (1.0 - slip) * deterministic + slip * deterministic.mean(1, keepdims=True)
    if goals is None:
        goal_states = rng.choice(n_states, size=n_agents + 1, replace=n_states < n_agents + 1)
        common_goal, own_goals = goal_states[0], goal_states[1:]
    else:
        if len(goals) != n_agents:
            raise ValueError(f"goals must give one cell per agent ({n_agents}), got {len(goals)}")
        goal_cells = []
        for r, c in goals:
            if not (0 <= r < height and 0 <= c < width) or is_wall[r, c]:
                raise ValueError(f"goal {(r, c)} is not a free cell of the grid")
            goal_cells.append(index[r * width + c])
        own_goals = np.array(goal_cells)
        common_goal = own_goals[0]
    rewards = (1.0 - heterogeneity) * transitions[None, :, :, common_goal] + heterogeneity * np.moveaxis(
        transitions[:, :, own_goals], -1, 0
    )
    rho = np.full(n_states, 1.0 / n_states)
    return FederatedTabularMDP(transitions, rewards, rho, gamma)

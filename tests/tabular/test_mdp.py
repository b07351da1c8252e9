import numpy as np
import pytest

from sb3_fedpg.tabular import FederatedTabularMDP, garnet, gridworld


def _valid(n_states=3, n_actions=2, n_agents=2):
    transitions = np.full((n_states, n_actions, n_states), 1.0 / n_states)
    rewards = np.zeros((n_agents, n_states, n_actions))
    rho = np.full(n_states, 1.0 / n_states)
    return transitions, rewards, rho


def test_valid_mdp_properties():
    mdp = FederatedTabularMDP(*_valid(), gamma=0.9)
    assert (mdp.n_states, mdp.n_actions, mdp.n_agents, mdp.n_params) == (3, 2, 2, 6)
    assert mdp.average_mdp().n_agents == 1
    assert mdp.subset([1]).n_agents == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, r, rho: (p * 1.1, r, rho), "rows must sum to 1"),
        (lambda p, r, rho: (p[:, :, :2], r, rho), "transitions must have shape"),
        (lambda p, r, rho: (p, r[0], rho), "for a single agent"),
        (lambda p, r, rho: (p, r[:, :2], rho), "rewards must have shape"),
        (lambda p, r, rho: (p, r, rho[:2]), "initial_distribution must have shape"),
        (lambda p, r, rho: (p, r, rho * 2), "initial_distribution must be a probability"),
        (lambda p, r, rho: (p, r * np.nan, rho), "rewards contains NaN"),
    ],
)
def test_invalid_inputs_raise(change, message):
    with pytest.raises(ValueError, match=message):
        FederatedTabularMDP(*change(*_valid()), gamma=0.9)


def test_negative_transition_named():
    p, r, rho = _valid()
    p[0, 0] = [1.5, -0.5, 0.0]
    with pytest.raises(ValueError, match=r"non-negative, got P\[0, 0, 1\]"):
        FederatedTabularMDP(p, r, rho, 0.9)


@pytest.mark.parametrize("gamma", [0.0, 1.0, -0.1, 1.5])
def test_gamma_outside_unit_interval(gamma):
    with pytest.raises(ValueError, match="gamma must lie in the open interval"):
        FederatedTabularMDP(*_valid(), gamma=gamma)


def test_garnet_structure_and_heterogeneity():
    mdp = garnet(12, 3, 4, n_agents=5, heterogeneity=1.0, seed=3)
    assert mdp.transitions.shape == (12, 3, 12)
    assert np.all((mdp.transitions > 0).sum(-1) <= 4)
    assert np.allclose(mdp.transitions.sum(-1), 1)
    assert mdp.rewards.min() >= 0 and mdp.rewards.max() <= 1
    same = garnet(12, 3, 4, n_agents=5, heterogeneity=0.0, seed=3)
    assert np.allclose(same.rewards, same.rewards[0])
    assert np.array_equal(same.transitions, mdp.transitions)
    assert not np.allclose(mdp.rewards, mdp.rewards[0])
    # adding agents keeps the existing ones
    more = garnet(12, 3, 4, n_agents=7, heterogeneity=1.0, seed=3)
    assert np.array_equal(more.rewards[:5], mdp.rewards)
    half = garnet(12, 3, 4, n_agents=5, heterogeneity=0.5, seed=3)
    assert np.allclose(half.rewards, 0.5 * (same.rewards + mdp.rewards))


@pytest.mark.parametrize(("kwargs", "message"), [({"branching": 20}, "branching"), ({"heterogeneity": 1.5}, "heterogeneity")])
def test_garnet_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        garnet(10, 2, **kwargs)


def test_gridworld_walls_slip_goals():
    mdp = gridworld(3, 3, n_agents=2, walls=[(1, 1)], goals=[(0, 0), (2, 2)], slip=0.0, heterogeneity=1.0)
    assert mdp.n_states == 8
    # deterministic without slip; moving up from the top-left corner stays put and pays agent 0
    assert np.allclose(mdp.transitions.max(-1), 1.0)
    assert mdp.rewards[0, 0, 0] == 1.0 and mdp.rewards[1, 0, 0] == 0.0
    # from cell (0, 1) moving down hits the wall: stay in state 1
    assert mdp.transitions[1, 2, 1] == 1.0
    slippery = gridworld(3, 3, n_agents=2, walls=[(1, 1)], goals=[(0, 0), (2, 2)], slip=0.4)
    assert np.isclose(slippery.transitions[1, 2, 1], 0.6 + 0.4 * 0.5)  # down and up both blocked
    with pytest.raises(ValueError, match="not a free cell"):
        gridworld(3, 3, n_agents=1, walls=[(1, 1)], goals=[(1, 1)])

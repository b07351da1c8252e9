import numpy as np
import pytest
import torch as th

from sb3_fedpg import FederatedPG
from sb3_fedpg.common import fedmath
from sb3_fedpg.common.adversarial import ByzantineAttack


@pytest.mark.parametrize("kind", ["noise", "sign_flip", "scale"])
def test_attack_rewrites_only_adversaries(kind):
    stacked = np.arange(12.0).reshape(4, 3)
    out = ByzantineAttack([1, 3], kind=kind, scale=5.0)(stacked, "delta")
    np.testing.assert_array_equal(out[[0, 2]], stacked[[0, 2]])
    assert not np.allclose(out[[1, 3]], stacked[[1, 3]])
    np.testing.assert_array_equal(stacked, np.arange(12.0).reshape(4, 3))  # input untouched
    if kind == "sign_flip":
        np.testing.assert_array_equal(out[1], -5.0 * stacked[1])
    t = ByzantineAttack([1], kind=kind)(th.as_tensor(stacked), "anchor")
    assert isinstance(t, th.Tensor)


def test_attack_reaches_the_server_in_both_phases():
    centres = np.array([[1.0], [1.0], [1.0], [1.0]])
    attack = ByzantineAttack([3], kind="scale", scale=-100.0)
    grad_fn = lambda p, s: centres - p
    clean = fedmath.fedpg_round(np.zeros(1), grad_fn, 4, 2, fedmath.gradient_step(0.5))
    hit = fedmath.fedpg_round(np.zeros(1), grad_fn, 4, 2, fedmath.gradient_step(0.5), attack=attack)
    assert hit.global_grad[0] < 0 < clean.global_grad[0]
    # The honest agents follow the poisoned g, and the adversary's own Δ is scaled by -100 too.
    assert abs(hit.params[0] - clean.params[0]) > 100


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(agents=[0], kind="flip"), "unknown attack 'flip'"),
        (dict(agents=[]), "at least one adversarial agent"),
        (dict(agents=[-1]), "agent indices must be >= 0"),
    ],
)
def test_bad_attack(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ByzantineAttack(**kwargs)


def test_attack_index_out_of_range():
    with pytest.raises(ValueError, match="adversarial agent 5 does not exist"):
        ByzantineAttack([5])(np.zeros((3, 2)), "anchor")


def test_fedpg_with_attack_and_robust_aggregator():
    kwargs = dict(n_agents=5, seed=0, n_steps=8, local_steps=2, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]))
    model = FederatedPG("MlpPolicy", "CartPole-v1", attack=ByzantineAttack([0], scale=1e3), aggregator="median", **kwargs)
    model.learn(300)
    assert th.isfinite(model.get_global_parameters()).all()
    assert th.linalg.vector_norm(model.get_global_parameters()) < 1e3

import pytest
import torch as th

from sb3_fedpg import FederatedPG

SMALL = dict(n_steps=8, local_steps=2, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]))


def model(**kwargs):
    return FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=4, seed=0, **{**SMALL, **kwargs})


def test_full_participation_fraction_reproduces_default_exactly():
    # One after the other: models share torch's global generator, as in SB3.
    a = model().learn(600)
    b = model(participation=1.0).learn(600)
    th.testing.assert_close(a.get_global_parameters(), b.get_global_parameters(), rtol=0, atol=0)


def test_partial_participation_averages_only_participants():
    m = model(participation=0.5)
    before = m.get_global_parameters()
    m.learn(1)
    res = m._last_round
    mask = res.participants
    assert int(mask.sum()) == 2
    expected = before + (res.local_params[mask] - before).mean(0)
    th.testing.assert_close(m.get_global_parameters(), expected.float())
    th.testing.assert_close(res.global_grad, res.anchor_grads[mask].mean(0))


def test_participants_vary_and_are_seeded():
    def masks(seed):
        m = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=4, seed=seed, participation=0.25, **SMALL)
        out = []
        for _ in range(6):
            m.learn(1, reset_num_timesteps=False)
            out.append(tuple(m._last_round.participants.tolist()))
        return out

    assert masks(1) == masks(1)
    assert len(set(masks(1))) > 1


@pytest.mark.parametrize("aggregator", ["median", "trimmed_mean", "norm_clipped_mean", "geometric_median"])
def test_robust_aggregators_train_and_save(aggregator, tmp_path):
    m = model(aggregator=aggregator)
    m.learn(300)
    m.save(tmp_path / "m.zip")
    loaded = FederatedPG.load(tmp_path / "m.zip")
    assert type(loaded.aggregator) is type(m.aggregator)


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1, True])
def test_bad_participation(value):
    with pytest.raises(ValueError, match=r"participation must be in \(0, 1\]"):
        model(participation=value)


def test_bad_aggregator():
    with pytest.raises(ValueError, match="unknown aggregator 'krum'"):
        model(aggregator="krum")

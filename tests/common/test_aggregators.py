import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.aggregators import AGGREGATORS, make_aggregator

ROBUST = ["median", "trimmed_mean", "norm_clipped_mean", "geometric_median"]
finite = st.floats(-100, 100, allow_nan=False, width=64)
stacks = st.integers(2, 9).flatmap(lambda n: arrays(np.float64, (n, 4), elements=finite))


@settings(max_examples=50, deadline=None)
@given(stacked=stacks, name=st.sampled_from(list(AGGREGATORS)), seed=st.integers(0, 2**16))
def test_permutation_invariance(stacked, name, seed):
    agg = make_aggregator(name)
    perm = np.random.default_rng(seed).permutation(len(stacked))
    np.testing.assert_allclose(agg(stacked[perm]), agg(stacked), rtol=1e-9, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(row=arrays(np.float64, (5,), elements=finite), n=st.integers(1, 9), name=st.sampled_from(list(AGGREGATORS)))
def test_agreeing_agents_give_the_common_value(row, n, name):
    # With no adversary and identical updates, every robust rule equals the mean.
    stacked = np.repeat(row[None], n, axis=0)
    np.testing.assert_allclose(make_aggregator(name)(stacked), row, rtol=1e-7, atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(stacked=stacks, name=st.sampled_from(list(AGGREGATORS)))
def test_numpy_and_torch_agree(stacked, name):
    agg = make_aggregator(name)
    np.testing.assert_allclose(agg(th.as_tensor(stacked)).numpy(), agg(stacked), rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(anchor=arrays(np.float64, (3,), elements=finite), n=st.integers(1, 8))
def test_identical_agents_have_zero_correction(anchor, n):
    anchors = np.repeat(anchor[None], n, axis=0)
    g = fedmath.average_anchor_gradients(anchors)
    np.testing.assert_allclose(fedmath.correction_norms(anchors, g), 0.0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    centres=st.integers(2, 6).flatmap(lambda n: arrays(np.float64, (n, 3), elements=st.floats(-5, 5))),
    seed=st.integers(0, 2**16),
    correction=st.booleans(),
)
def test_round_is_invariant_to_agent_order(centres, seed, correction):
    def oracle(c):
        return lambda params, step: c - params

    perm = np.random.default_rng(seed).permutation(len(centres))
    theta = np.zeros(3)
    step = fedmath.gradient_step(0.3)
    a = fedmath.fedpg_round(theta, oracle(centres), len(centres), 4, step, correction=correction).params
    b = fedmath.fedpg_round(theta, oracle(centres[perm]), len(centres), 4, step, correction=correction).params
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ROBUST)
def test_robust_rules_resist_two_of_ten_adversaries(name):
    rng = np.random.default_rng(0)
    honest = rng.normal(1.0, 0.1, size=(8, 6))
    attack = np.full((2, 6), -1e6)
    agg = make_aggregator(name, **({"trim": 0.2} if name == "trimmed_mean" else {}))
    out = agg(np.concatenate([honest, attack]))
    assert np.abs(out - honest.mean(0)).max() < 1.0
    assert np.abs(make_aggregator("mean")(np.concatenate([honest, attack])) - honest.mean(0)).max() > 1e4


def test_participants_mask_averages_only_participants():
    centres = np.array([[0.0], [1.0], [10.0]])
    mask = np.array([True, True, False])
    res = fedmath.fedpg_round(np.zeros(1), lambda p, s: centres - p, 3, 1, fedmath.gradient_step(1.0), participants=mask)
    np.testing.assert_allclose(res.global_grad, [0.5])
    np.testing.assert_allclose(res.params, [0.5])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("krum",), {}, "unknown aggregator 'krum'"),
        (("trimmed_mean",), {"trim": 0.5}, r"trim must be in \[0, 0.5\)"),
        (("median",), {"trim": 0.1}, "bad aggregator_kwargs for 'median'"),
        ((np.mean,), {"trim": 0.1}, "aggregator_kwargs only apply"),
        (("norm_clipped_mean",), {"max_norm": -1.0}, "max_norm must be > 0"),
        (("geometric_median",), {"n_iterations": 0}, "n_iterations must be >= 1"),
    ],
)
def test_bad_aggregator_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_aggregator(*args, **kwargs)

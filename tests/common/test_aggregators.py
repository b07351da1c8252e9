import pickle
import warnings

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.aggregators import (
    AGGREGATORS,
    GeometricMedianAggregator,
    NormClippedMeanAggregator,
    TrimmedMeanAggregator,
    make_aggregator,
    tolerated_attackers,
)

ROBUST = ["median", "trimmed_mean", "norm_clipped_mean", "geometric_median"]
finite = st.floats(-100, 100, allow_nan=False, width=64)
stacks = st.integers(2, 9).flatmap(lambda n: arrays(np.float64, (n, 4), elements=finite))


@settings(max_examples=50, deadline=None)
@given(stacked=stacks, name=st.sampled_from(list(AGGREGATORS)), seed=st.integers(0, 2**16))
def test_permutation_invariance(stacked, name, seed):
    agg = make_aggregator(name)
    perm = np.random.default_rng(seed).permutation(len(stacked))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a rare Weiszfeld run that stops at max_iterations
        tol = 1e-6 if name == "geometric_median" else 1e-9  # Weiszfeld stops at a tolerance
        np.testing.assert_allclose(agg(stacked[perm]), agg(stacked), rtol=tol, atol=tol)


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
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
        (("geometric_median",), {"max_iterations": 0}, "max_iterations must be an integer >= 1"),
        (("geometric_median",), {"tol": -1.0}, r"tol must be in \[0, 1\)"),
        (("norm_clipped_mean",), {"radius_factor": 0.5}, "radius_factor must be a finite number >= 1"),
        (("norm_clipped_mean",), {"center": "mean"}, "center must be 'median' or 'zero'"),
    ],
)
def test_bad_aggregator_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_aggregator(*args, **kwargs)


# --- robust rules at and beyond their documented breakdown points ---------------------------------

N = 11  # agents in the breakdown tests (the example: 5 of 11 colluding at 1e6)
DIM = 8


def _attacked(f, magnitude, seed=0, n=N):
    """n agents, the last f of them colluding: all send the same vector of the given magnitude."""
    honest = np.random.default_rng(seed).normal(1.0, 0.1, size=(n - f, DIM))
    attack = np.full((f, DIM), magnitude)
    return honest, np.concatenate([honest, attack])


def _error(name, f, magnitude, n=N):
    honest, stacked = _attacked(f, magnitude, n=n)
    spread = max(np.linalg.norm(honest - honest.mean(0), axis=1).max(), 1e-3)
    return np.linalg.norm(make_aggregator(name)(stacked) - honest.mean(0)) / spread


def test_trimmed_mean_trims_below_five_agents():
    # The example: floor(0.2 * 4) = 0 trimmed nothing and gave 250001.
    assert make_aggregator("trimmed_mean")(np.array([[1.0], [1.0], [1.0], [1e6]]))[0] == 1.0
    assert make_aggregator("trimmed_mean")(np.array([[1.0], [2.0], [1e6]]))[0] == 2.0
    agg = TrimmedMeanAggregator(0.2)
    assert [agg.n_trimmed(n) for n in range(1, 12)] == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2]
    # n <= 2: nothing can be trimmed, the mean (documented); trim=0 is exactly the mean.
    np.testing.assert_array_equal(agg(np.array([[1.0], [5.0]])), [3.0])
    stacked = np.random.default_rng(1).normal(size=(7, 3))
    np.testing.assert_array_equal(TrimmedMeanAggregator(0.0)(stacked), stacked.mean(0))


def test_mean_is_exactly_the_mean():
    stacked = np.random.default_rng(2).normal(size=(9, 5))
    np.testing.assert_array_equal(make_aggregator("mean")(stacked), stacked.mean(0))
    t = th.as_tensor(stacked)
    assert th.equal(make_aggregator("mean")(t), t.mean(0))


@pytest.mark.parametrize("name", list(AGGREGATORS))
@pytest.mark.parametrize("n", [3, 4, 5, 10, 11])
def test_documented_breakdown_point(name, n):
    """Up to the documented number of attackers the error does not grow with their magnitude; one more breaks it."""
    f_max = tolerated_attackers(make_aggregator(name), n)
    for f in range(f_max + 1):
        errors = [_error(name, f, m, n=n) for m in (1e3, 1e6, 1e12)]
        assert max(errors) < 3.0 * np.sqrt(DIM), (name, n, f, errors)  # bounded: a few honest spreads
        assert errors[-1] < errors[0] * 1.01 + 1.0, (name, n, f, errors)  # and independent of the magnitude
    if f_max + 1 < n:
        assert _error(name, f_max + 1, 1e12, n=n) > 1e6, (name, n)  # the documented number is tight


def test_documented_breakdown_table():
    table = {name: tolerated_attackers(make_aggregator(name), 11) for name in AGGREGATORS}
    assert table == {"mean": 0, "median": 5, "trimmed_mean": 2, "norm_clipped_mean": 5, "geometric_median": 5}
    assert tolerated_attackers(NormClippedMeanAggregator(max_norm=1.0, center="zero"), 11) == 10
    with pytest.raises(TypeError, match="no documented breakdown point"):
        tolerated_attackers(np.mean, 11)


def test_geometric_median_converges_with_five_of_eleven_colluding():
    # The example: 50 fixed iterations from the mean were 91x off; now it stops at a tolerance.
    honest, stacked = _attacked(5, 1e6)
    agg = GeometricMedianAggregator()
    for data in (stacked, th.as_tensor(stacked), th.as_tensor(stacked, dtype=th.float32)):
        out = np.asarray(agg(data), dtype=np.float64)
        assert agg.last_converged and 0 <= agg.last_iterations < agg.max_iterations
        assert np.linalg.norm(out - honest.mean(0)) < 0.5
    # a run that cannot reach the tolerance says so
    agg = GeometricMedianAggregator(max_iterations=1, tol=0.0)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        agg(np.random.default_rng(3).normal(size=(7, 4)))
    assert agg.last_iterations == 1 and not agg.last_converged


def test_geometric_median_data_point_and_segment():
    # A data point that is the median is found exactly (Weiszfeld only creeps towards it) ...
    agg = GeometricMedianAggregator()
    np.testing.assert_array_equal(agg(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])), [0.0, 0.0])
    # ... and collinear points with a segment of minimisers give its midpoint, whatever the order.
    np.testing.assert_array_equal(agg(np.array([[3.0], [0.0], [2.0], [1.0]])), [1.5])


def test_geometric_median_deprecated_n_iterations():
    with pytest.warns(DeprecationWarning, match="max_iterations"):
        assert make_aggregator("geometric_median", n_iterations=7).max_iterations == 7
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="n_iterations must be >= 1"):
        make_aggregator("geometric_median", n_iterations=0)


def test_aggregators_pickled_before_the_change_still_work():
    # Files saved before centred clipping / tolerance-based Weiszfeld hold objects without the new attributes:
    # they get the new rules, except that a fixed max_norm keeps its meaning (clipping around zero).
    old_gm = GeometricMedianAggregator.__new__(GeometricMedianAggregator)
    old_gm.__setstate__({"n_iterations": 50, "eps": 1e-8})
    old_nc = NormClippedMeanAggregator.__new__(NormClippedMeanAggregator)
    old_nc.__setstate__({"max_norm": None})
    old_fixed = NormClippedMeanAggregator.__new__(NormClippedMeanAggregator)
    old_fixed.__setstate__({"max_norm": 2.0})
    stacked = np.random.default_rng(4).normal(size=(5, 3))
    for agg, new in ((old_gm, GeometricMedianAggregator()), (old_nc, NormClippedMeanAggregator())):
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(agg))(stacked), new(stacked))
    assert old_gm.max_iterations == 1000 and not hasattr(old_gm, "n_iterations")
    assert old_fixed.center == "zero"
    np.testing.assert_array_equal(old_fixed(stacked), NormClippedMeanAggregator(2.0, center="zero")(stacked))


def test_median_does_not_use_quantile():
    # th.quantile refuses more than 2**24 elements; the sort-based median does not care.
    big = th.zeros(3, 2**23)
    big[1] = 1.0
    assert float(make_aggregator("median")(big).max()) == 0.0


@settings(max_examples=40, deadline=None)
@given(
    stacked=stacks,
    shift=arrays(np.float64, (4,), elements=finite),
    name=st.sampled_from(list(AGGREGATORS)),
)
def test_translation_equivariance(stacked, shift, name):
    agg = make_aggregator(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(agg(stacked + shift), agg(stacked) + shift, rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(stacked=stacks, name=st.sampled_from(list(AGGREGATORS)))
def test_output_within_the_points_bounding_box(stacked, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = make_aggregator(name)(stacked)
    slack = 1e-9 * (1 + np.abs(stacked).max())
    assert np.all(out >= stacked.min(0) - slack) and np.all(out <= stacked.max(0) + slack)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 11),
    data=st.data(),
    name=st.sampled_from([name for name in AGGREGATORS if name != "mean"]),
)
def test_bounded_by_the_honest_points_below_breakdown(n, data, name):
    """Any f <= tolerated attackers, anywhere (up to 1e12): the result stays near the honest points."""
    agg = make_aggregator(name)
    f = data.draw(st.integers(0, tolerated_attackers(agg, n)), label="attackers")
    honest = data.draw(arrays(np.float64, (n - f, 3), elements=st.floats(-1, 1)), label="honest")
    attack = data.draw(arrays(np.float64, (f, 3), elements=st.floats(-1e12, 1e12)), label="attack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = agg(np.concatenate([honest, attack]))
    centre = honest.mean(0)
    radius = np.linalg.norm(honest - centre, axis=1).max()
    slack = 1e-6
    if name in ("median", "trimmed_mean"):
        # every kept value of a coordinate lies within the honest values' range
        assert np.all(out >= honest.min(0) - slack) and np.all(out <= honest.max(0) + slack)
    elif name == "geometric_median":
        # ||gm - c|| <= 2 (n - f) / (n - 2f) * max_i ||h_i - c|| (cost comparison with the honest centre)
        assert np.linalg.norm(out - centre) <= 2 * (n - f) / (n - 2 * f) * radius * 1.001 + slack
    else:  # centred clipping: centre in the honest box, radius a few honest spreads
        box = np.linalg.norm(honest.max(0) - honest.min(0))
        assert np.linalg.norm(out - centre) <= box + 2 * (box + radius) + slack


def nan_aggregator(stacked):
    return stacked.mean(0) * float("nan")


def numpy_aggregator(stacked):
    return stacked.mean(0).numpy()


def wrong_axis_aggregator(stacked):
    return stacked.mean(1)


@pytest.mark.parametrize(
    "aggregator, error, message",
    [
        (nan_aggregator, FloatingPointError, "aggregator 'nan_aggregator' returned non-finite values .* not the agents"),
        (numpy_aggregator, TypeError, "returned a numpy.ndarray .* same array type it is given .*torch.Tensor"),
        (wrong_axis_aggregator, TypeError, "must reduce over the agents"),
    ],
)
def test_a_faulty_custom_aggregator_is_named_and_changes_nothing(aggregator, error, message):
    from sb3_fedpg import FederatedPG

    model = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=3, n_envs_per_agent=2, n_steps=8, seed=0)
    model.aggregator = aggregator
    before = model.get_global_parameters().clone()
    with pytest.raises(error, match=message):
        model.learn(200)
    assert th.equal(model.get_global_parameters(), before) and model.num_timesteps == 0


def test_numpy_inputs_need_numpy_outputs():
    stacked = np.ones((3, 4))
    with pytest.raises(TypeError, match=r"numpy\.ndarray of shape"):
        fedmath.checked_aggregate(lambda x: th.as_tensor(x).mean(0), stacked)
    # non-finite inputs are the agents' problem: passed through for the caller's own check to name them
    stacked[0, 0] = np.nan
    assert np.isnan(fedmath.checked_aggregate(lambda x: x.mean(0), stacked)[0])

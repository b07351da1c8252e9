import numpy as np
import pytest
import torch as th

from sb3_fedpg.common import fedmath


def quadratic_problem(n_agents=4, dim=3, seed=0):
    """J_i(θ) = -½ (θ - c_i)ᵀ A_i (θ - c_i): different curvatures make FedAvg biased."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_agents, dim)) * 2
    mats = []
    for _ in range(n_agents):
        q = rng.normal(size=(dim, dim))
        mats.append(q @ q.T / dim + np.diag(rng.uniform(0.2, 2.0, size=dim)))
    mats = np.stack(mats)

    def grad_fn(params, step):
        return -np.einsum("nij,nj->ni", mats, params - centres)

    optimum = np.linalg.solve(mats.sum(0), np.einsum("nij,nj->i", mats, centres))
    return grad_fn, optimum, mats


def run(grad_fn, n_agents, dim, rounds, local_steps, lr, correction, reuse=True):
    theta = np.zeros(dim)
    for _ in range(rounds):
        theta = fedmath.fedpg_round(
            theta, grad_fn, n_agents, local_steps, fedmath.gradient_step(lr), correction=correction, reuse_anchor=reuse
        ).params
    return theta


@pytest.mark.parametrize("reuse", [True, False])
def test_correction_removes_heterogeneity_bias(reuse):
    grad_fn, optimum, _ = quadratic_problem()
    fast = run(grad_fn, 4, 3, rounds=300, local_steps=10, lr=0.1, correction=True, reuse=reuse)
    fedavg = run(grad_fn, 4, 3, rounds=300, local_steps=10, lr=0.1, correction=False, reuse=reuse)
    # Fast-FedPG's fixed point is the centralised optimum; FedAvg-PG's is not.
    assert np.linalg.norm(fast - optimum) < 1e-8
    assert np.linalg.norm(fedavg - optimum) > 1e-2


def test_fedavg_is_unbiased_with_one_local_step():
    grad_fn, optimum, _ = quadratic_problem()
    fedavg = run(grad_fn, 4, 3, rounds=500, local_steps=1, lr=0.1, correction=False)
    assert np.linalg.norm(fedavg - optimum) < 1e-8


@pytest.mark.parametrize("correction", [True, False])
@pytest.mark.parametrize("reuse", [True, False])
def test_one_local_step_is_centralised_gradient_ascent(correction, reuse):
    grad_fn, _, _ = quadratic_problem()
    theta = np.array([0.3, -0.2, 1.0])
    result = fedmath.fedpg_round(theta, grad_fn, 4, 1, fedmath.gradient_step(0.05), correction=correction, reuse_anchor=reuse)
    pooled = grad_fn(np.repeat(theta[None], 4, 0), -1).mean(0)
    np.testing.assert_allclose(result.params, theta + 0.05 * pooled, rtol=0, atol=1e-12)


def test_identical_agents_have_zero_correction():
    rng = np.random.default_rng(1)
    anchors = np.repeat(rng.normal(size=(1, 5)), 6, axis=0)
    g = fedmath.average_anchor_gradients(anchors)
    np.testing.assert_allclose(fedmath.correction_norms(anchors, g), 0.0, atol=1e-12)
    local = rng.normal(size=(6, 5))
    np.testing.assert_allclose(fedmath.corrected_direction(local, anchors, g), local, atol=1e-12)


def test_server_learning_rate_scales_the_average_change():
    theta = np.array([1.0, 2.0])
    local = np.array([[2.0, 2.0], [1.0, 4.0]])
    np.testing.assert_allclose(fedmath.aggregate_parameter_changes(theta, local, 0.5), [1.25, 2.5])


def test_numpy_and_torch_agree():
    _, _, mats = quadratic_problem()
    mats_t = th.as_tensor(mats)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 3))

    def grad_np(params, step):
        return -np.einsum("nij,nj->ni", mats, params - centres)

    def grad_th(params, step):
        return -th.einsum("nij,nj->ni", mats_t, params - th.as_tensor(centres))

    theta = rng.normal(size=3)
    res_np = fedmath.fedpg_round(theta, grad_np, 4, 5, fedmath.gradient_step(0.1))
    res_th = fedmath.fedpg_round(th.as_tensor(theta), grad_th, 4, 5, fedmath.gradient_step(0.1))
    np.testing.assert_allclose(res_np.params, res_th.params.numpy(), atol=1e-12)
    assert res_np.drift == pytest.approx(res_th.drift)
    assert res_np.correction_norm == pytest.approx(res_th.correction_norm)


def test_round_result_metrics():
    grad_fn, _, _ = quadratic_problem()
    theta = np.zeros(3)
    res = fedmath.fedpg_round(theta, grad_fn, 4, 3, fedmath.gradient_step(0.1))
    expected_drift = np.linalg.norm(res.local_params - theta, axis=1).mean()
    assert res.drift == pytest.approx(expected_drift)
    assert res.correction_norm == pytest.approx(np.linalg.norm(res.global_grad - res.anchor_grads, axis=1).mean())
    assert res.drift > 0


def test_message_bytes():
    assert fedmath.round_message_bytes(100, 8, correction=True) == (6400, 6400)
    assert fedmath.round_message_bytes(100, 8, correction=False) == (3200, 3200)


@pytest.mark.parametrize("variance_control", fedmath.VARIANCE_CONTROLS)
def test_every_variance_control_is_the_papers_update_with_exact_gradients(variance_control):
    # Exact gradients: ĝ_i(θ̄; B) = a_i and no noise (v_i = 0 → SNR = inf → β = 1, Kalman gain 1). Every variant must
    # then give exactly Fast-FedPG's round.
    grad_fn, optimum, _ = quadratic_problem()
    theta = np.zeros(3)
    estimate, variance, drift = np.zeros((4, 3)), np.ones(4), np.ones(4)  # an arbitrary filter state
    for _ in range(300):
        anchors = grad_fn(np.repeat(theta[None], 4, 0), -1)
        g = anchors.mean(0)
        beta = fedmath.snr_damping(fedmath.correction_snr(anchors, g, np.zeros(4)))
        assert np.all(beta == 1.0)
        estimate, variance, gain = fedmath.correction_filter_step(g - anchors, np.zeros(4), estimate, variance, drift)
        assert np.all(gain == 1.0)

        def local_fn(params, step, anchors=anchors, g=g, beta=beta, filtered=estimate):
            local = anchors if step == 0 else grad_fn(params, step)
            at_bar = anchors  # the same (exact) oracle evaluated at θ̄
            return fedmath.variance_controlled_gradient(local, anchors, g, variance_control, at_bar, beta, filtered)

        local = fedmath.run_local_steps(theta, anchors, g, local_fn, 10, fedmath.gradient_step(0.1), True, False)
        reference = fedmath.run_local_steps(theta, anchors, g, grad_fn, 10, fedmath.gradient_step(0.1), True, True)
        np.testing.assert_allclose(local, reference, rtol=0, atol=1e-12)
        theta = fedmath.aggregate_parameter_changes(theta, local)
    assert np.linalg.norm(theta - optimum) < 1e-8


def test_correction_filter_averages_a_still_correction_and_tracks_a_moving_one():
    rng = np.random.default_rng(0)
    n, p, sigma2 = 4, 50, 4.0  # per-round observation noise of trace σ² (norm ≈ 2), signal of norm ≈ 1
    truth = rng.normal(size=(n, p)) / np.sqrt(p)

    def run(moving):
        c = truth.copy()
        estimate = variance = None
        drift_sum, weight, errors = np.zeros(n), 0.0, []
        for r in range(200):
            if moving:
                c = c + 0.3 * rng.normal(size=(n, p)) / np.sqrt(p)  # a step of norm ≈ 0.3 per round
            y = c + np.sqrt(sigma2 / p) * rng.normal(size=(n, p))
            if estimate is None:
                estimate, variance = y, np.full(n, sigma2)
                continue
            drift_sum = 0.9 * drift_sum + 0.1 * fedmath.correction_drift_sample(y, np.full(n, sigma2), estimate, variance)
            weight = 0.9 * weight + 0.1
            estimate, variance, gain = fedmath.correction_filter_step(
                y, np.full(n, sigma2), estimate, variance, np.clip(drift_sum / weight, 0, None)
            )
            if r >= 100:
                errors.append(np.mean(np.sum((estimate - c) ** 2, axis=1)))
        return np.mean(errors), gain

    still_error, still_gain = run(moving=False)
    moving_error, moving_gain = run(moving=True)
    # a still correction: the filter averages over ~10+ rounds, far below one observation's noise (σ² = 4)
    assert still_error < 0.1 * sigma2 and still_gain.max() < 0.2, (still_error, still_gain)
    # a moving one (q ≈ 0.09 per round): the Kalman steady state P = (√(q² + 4qσ²) − q) / 2 ≈ 0.56 — the filter
    # keeps a short memory (gain well above the still case) and still beats the raw observation several-fold
    assert moving_error < 0.3 * sigma2 and moving_gain.mean() > 1.5 * still_gain.mean(), (moving_error, moving_gain)


def test_noise_and_snr_estimates():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(6, 20))  # agents' true gradients (heterogeneous)
    sigma = 0.5
    subs = truth[None] + sigma * rng.normal(size=(4000, 6, 20))  # many independent sub-batch gradients
    # unbiased trace of Var of the mean of k sub-batches: p σ² / k
    k = 4
    v = np.mean([fedmath.anchor_noise_variance(subs[i : i + k]) for i in range(0, 4000, k)], axis=0)
    np.testing.assert_allclose(v, 20 * sigma**2 / k, rtol=0.05)
    # SNR: signal ≈ ‖E(g − a_i)‖² / noise
    anchors = subs[:k].mean(0)
    snr = fedmath.correction_snr(anchors, anchors.mean(0), np.full(6, 20 * sigma**2 / k))
    assert np.all(snr >= 0) and np.median(snr) > 1  # heterogeneity (norm² ≈ 20 per agent) dominates noise (≈ 1.25)
    same = truth[:1].repeat(6, 0)[None] + sigma * rng.normal(size=(k, 6, 20))  # identical agents: noise only
    a = same.mean(0)
    assert np.median(fedmath.correction_snr(a, a.mean(0), np.full(6, 20 * sigma**2 / k))) < 0.5
    assert fedmath.snr_damping(np.array([0.0, 1.0, np.inf])).tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("reuse, calls", [(True, 5), (False, 6)])
def test_anchor_reuse_saves_one_oracle_call_per_round(reuse, calls):
    # With exact gradients reusing the anchor changes no number, so count the oracle's calls instead: a round costs
    # the anchor plus H − 1 fresh batches with reuse, H fresh batches without.
    grad_fn, _, _ = quadratic_problem()
    steps = []

    def counting(params, step):
        steps.append(step)
        return grad_fn(params, step)

    fedmath.fedpg_round(np.zeros(3), counting, 4, 5, fedmath.gradient_step(0.1), reuse_anchor=reuse)
    assert len(steps) == calls and steps[0] == -1
    assert steps[1:] == (list(range(1, 5)) if reuse else list(range(5)))


def test_average_buffers_is_the_participants_mean_in_numpy_and_torch():
    rows = {
        "bn.running_mean": np.array([[0.0, 1.0], [2.0, 3.0], [10.0, -5.0]], np.float32),
        "bn.running_var": np.array([[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]], np.float32),
        "bn.num_batches_tracked": np.array([4, 5, 9], np.int64),
    }
    mask = np.array([True, True, False])
    out = fedmath.average_buffers(rows, mask)
    np.testing.assert_array_equal(out["bn.running_mean"], [1.0, 2.0])
    np.testing.assert_array_equal(out["bn.running_var"], [2.0, 3.0])  # the plain mean, not the merge of moments
    assert out["bn.num_batches_tracked"] == 4 and out["bn.num_batches_tracked"].dtype == np.int64  # floor of 4.5
    torch_out = fedmath.average_buffers({k: th.as_tensor(v) for k, v in rows.items()}, th.as_tensor(mask))
    for name, value in out.items():
        assert torch_out[name].dtype == th.as_tensor(value).dtype
        np.testing.assert_array_equal(torch_out[name].numpy(), value)
    assert fedmath.average_buffers(rows)["bn.num_batches_tracked"] == 6
    with pytest.raises(ValueError, match="no participant"):
        fedmath.average_buffers(rows, np.zeros(3, bool))


def test_nonfinite_rows_names_every_bad_row_and_only_those():
    x = th.zeros(5, 3, 2)
    assert fedmath.nonfinite_rows(x) == []
    x[1, 0, 1], x[3, 2, 0], x[4, 1, 1] = float("nan"), float("inf"), -float("inf")
    assert fedmath.nonfinite_rows(x) == [1, 3, 4]
    # a finite tensor whose float32 sum overflows is still finite everywhere
    big = th.full((4, 8), 3e38)
    assert not bool(th.isfinite(big.sum())) and fedmath.nonfinite_rows(big) == []
    # +inf and -inf in one tensor sum to NaN: still found
    x = th.zeros(3, 4)
    x[0, 0], x[2, 3] = float("inf"), -float("inf")
    assert fedmath.nonfinite_rows(x) == [0, 2]

"""FedSVRPG-M's math in fedmath: the local direction (Eq. (4)), the server's momentum, importance weights, the solver."""

import numpy as np
import pytest
import torch as th

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.aggregators import make_aggregator


@pytest.mark.parametrize("as_tensor", [False, True])
def test_momentum_direction_is_equation_4(as_tensor):
    rng = np.random.default_rng(0)
    local, at_previous, momentum = rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), rng.normal(size=5)
    beta = 0.3
    # u = β ĝ(θ_k) + (1 − β) (u_r + ĝ(θ_k) − w ĝ(θ̄_{r−1})), written as in the paper
    expected = beta * local + (1 - beta) * (momentum + local - at_previous)
    args = [th.as_tensor(x) for x in (local, at_previous, momentum)] if as_tensor else [local, at_previous, momentum]
    np.testing.assert_allclose(np.asarray(fedmath.momentum_direction(*args, beta)), expected, atol=1e-12)
    # β = 1: the plain local gradient (FedAvg-PG)
    np.testing.assert_array_equal(np.asarray(fedmath.momentum_direction(*args, 1.0)), local)


def test_server_momentum_is_the_mean_local_direction():
    rng = np.random.default_rng(1)
    theta_bar = rng.normal(size=4)
    directions = rng.normal(size=(3, 2, 4))  # agent, local step, parameter
    eta, h = 0.2, 2
    local = theta_bar + eta * directions.sum(1)  # θ_{i,H} after H plain steps
    np.testing.assert_allclose(fedmath.server_momentum(theta_bar, local, eta, h), directions.mean((0, 1)), atol=1e-12)
    mask = np.array([True, False, True])
    np.testing.assert_allclose(
        fedmath.server_momentum(theta_bar, local, eta, h, participants=mask), directions[mask].mean((0, 1)), atol=1e-12
    )
    median = make_aggregator("median")
    np.testing.assert_allclose(
        fedmath.server_momentum(theta_bar, local, eta, h, median), np.median(directions.sum(1), 0) / h, atol=1e-12
    )


def test_importance_weights_numpy_and_torch_agree_and_respect_the_valid_steps():
    rng = np.random.default_rng(2)
    target, behaviour = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    valid = (rng.random((2, 5, 3)) < 0.7).astype(float)
    expected = np.exp(((target - behaviour) * valid).sum(1))
    np.testing.assert_allclose(fedmath.importance_weights(target, behaviour, 1, valid), expected, rtol=1e-12)
    torch_weights = fedmath.importance_weights(th.as_tensor(target), th.as_tensor(behaviour), 1, th.as_tensor(valid), 2.0)
    np.testing.assert_allclose(torch_weights.numpy(), np.minimum(expected, 2.0), rtol=1e-12)


class LinearOracle:
    """Exact gradients of quadratics ``J_i(θ) = −½‖θ − c_i‖²`` (so ``∇J_i(θ) = c_i − θ``), counting its calls."""

    def __init__(self, centres, previous):
        self.centres, self.previous, self.calls = centres, previous, []

    def __call__(self, params, step):
        self.calls.append(step)
        return self.centres - params, self.centres - self.previous


def test_first_round_starts_from_the_anchors_average_then_exchanges_no_anchors():
    centres = np.array([[1.0, 0.0], [0.0, 3.0]])
    theta_bar, beta, eta = np.zeros(2), 0.25, 0.1
    update = fedmath.gradient_step(eta)
    # round 0: anchors a_i = ∇J_i(θ̄_0) at step −1, u_0 = g, the anchor batch reused at k = 0: u_{i,0} = β a_i + (1 − β) g
    oracle = LinearOracle(centres, theta_bar)
    solver = fedmath.MomentumSteps(oracle, 1, update, beta)
    result = fedmath.run_round(theta_bar, solver, 2)
    g = centres.mean(0)
    np.testing.assert_allclose(result.anchor_grads, centres)
    np.testing.assert_allclose(result.local_params, eta * (beta * centres + (1 - beta) * g))
    assert oracle.calls == [-1]  # the first local step reused the anchor batch
    # round 1: no anchors (zeros, no oracle call), the server's momentum and θ̄_0 are used
    momentum = fedmath.server_momentum(theta_bar, result.local_params, eta, 1)
    oracle = LinearOracle(centres, theta_bar)
    solver = fedmath.MomentumSteps(oracle, 2, update, beta, momentum)
    second = fedmath.run_round(result.params, solver, 2)
    assert oracle.calls == [0, 1] and not second.anchor_grads.any()
    first_step = (centres - result.params) + (1 - beta) * (momentum - (centres - theta_bar))
    params = result.params + eta * first_step
    expected = params + eta * ((centres - params) + (1 - beta) * (momentum - (centres - theta_bar)))
    np.testing.assert_allclose(second.local_params, expected, atol=1e-12)

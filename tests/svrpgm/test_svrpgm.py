"""FederatedSVRPGM: the SB3 API (learn, predict, save/load, seeds), its hyperparameter checks and its round."""

import numpy as np
import pytest
import torch as th

from sb3_fedpg import FederatedPG, FederatedSVRPGM
from sb3_fedpg.common.hyperparams import FedSVRPGMHyperparams

FAMILY = "sb3_fedpg/HeteroPointMass-v0"
SMALL = dict(n_steps=16, local_steps=3, n_envs_per_agent=2, policy_kwargs=dict(net_arch=[16]))


def small(env_id=FAMILY, n_agents=3, seed=0, **kwargs):
    return FederatedSVRPGM("MlpPolicy", env_id, n_agents=n_agents, seed=seed, **{**SMALL, **kwargs})


@pytest.mark.parametrize("estimator", ["gpomdp", "gae"])
def test_learn_save_load_predict(estimator, tmp_path):
    model = small(estimator=estimator)
    assert model.momentum is None
    model.learn(500)
    assert model.num_timesteps >= 500 and model.momentum is not None
    assert model.last_round is not None and model.last_round.n_participants == 3
    obs = model.env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    loaded = FederatedSVRPGM.load(tmp_path / "model.zip", env=model.env)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    # the server's memory (u_r, θ̄_{r−1}) and the local critics come back: training goes on where it stopped
    th.testing.assert_close(loaded.momentum, model.momentum)
    th.testing.assert_close(loaded.server_memory.previous_params, model.server_memory.previous_params)
    th.testing.assert_close(loaded.critics.params, model.critics.params)
    assert loaded.momentum_coef == model.momentum_coef and loaded.estimator == estimator
    loaded.learn(200, reset_num_timesteps=False)
    assert loaded.num_timesteps > model.num_timesteps


def test_same_seed_same_training_and_another_seed_another():
    params = [small(seed=seed).learn(400).get_global_parameters() for seed in (7, 7, 8)]
    th.testing.assert_close(params[0], params[1], rtol=0, atol=0)
    assert not th.allclose(params[0], params[2])


def test_momentum_one_is_fedavg_pg():
    # β = 1 drops the momentum and its importance-weighted correction: FedAvg-PG, batch for batch (one batch per local
    # step, the first round's anchor batch being its first local step's, as FederatedPG reuses its anchor's).
    # Per-agent normalisation: with the shared one FederatedPG's scale is set by each round's anchors, FedSVRPG-M's
    # (no anchors after its first round) by the previous round's batches.
    kwargs = dict(n_agents=2, seed=3, estimator="gpomdp", baseline="mean", learning_rate=0.05, **SMALL)
    kwargs["normalize_advantage"] = "per_agent"
    svrpgm = FederatedSVRPGM("MlpPolicy", FAMILY, momentum_coef=1.0, **kwargs).learn(600)
    fedavg = FederatedPG("MlpPolicy", FAMILY, correction=False, **kwargs).learn(600)
    assert svrpgm.num_timesteps == fedavg.num_timesteps
    th.testing.assert_close(svrpgm.get_global_parameters(), fedavg.get_global_parameters(), rtol=1e-5, atol=1e-6)
    # with momentum the iterates differ from the first round on
    momentum = FederatedSVRPGM("MlpPolicy", FAMILY, momentum_coef=0.5, **kwargs).learn(600)
    assert not th.allclose(momentum.get_global_parameters(), fedavg.get_global_parameters(), atol=1e-4)


@pytest.mark.parametrize("estimator", ["gpomdp", "gae"])
def test_importance_weighted_gradient_at_the_sampling_parameters_is_the_gradient(estimator):
    # ŵ ĝ(θ; B) with w ≡ 1 (evaluated at the parameters that sampled B) is ĝ(θ; B); away from them the trajectory
    # weights are exp(Σ_h log π_old − log π_new) over each segment's steps.
    model = small(estimator=estimator, n_agents=2)
    model._setup_learn(1, None)
    learner = model.learner
    params = model.get_global_parameters().unsqueeze(0).repeat(2, 1)
    batch = model.collect_batch(params, model._round_callback(None), reset=True)
    weights = learner.batch_weights(batch)
    behaviour = learner.log_prob(params, batch)
    th.testing.assert_close(
        learner.importance_weighted_gradient(params, batch, weights, behaviour),
        learner.policy_gradient(params, batch, weights),
    )
    other = params + 0.05 * th.randn_like(params)
    moved = learner.importance_weighted_gradient(other, batch, weights, behaviour)
    assert th.isfinite(moved).all() and not th.allclose(moved, learner.policy_gradient(other, batch, weights))


def test_rounds_log_and_exchange_anchors_only_once():
    model = small(n_agents=2)
    model._setup_learn(1, None)
    model.train()
    first = model.last_round
    assert first is not None and first.correction_norm > 0  # u_0 = g, the average of the anchors
    model.train()
    second = model.last_round
    assert second is not None and not second.anchor_grads.any() and second.correction_norm == 0
    th.testing.assert_close(model.server_memory.previous_params, second.params_before)
    values = model.logger.name_to_value
    for key in ("fed/momentum_norm", "train/importance_weight", "train/policy_gradient_norm", "fed/bytes_down"):
        assert key in values
    assert values["fed/bytes_down"] == 3 * model.n_federated_params * 2 * 4  # θ̄_r, u_r, θ̄_{r−1} to each agent


def test_a_failed_round_changes_neither_the_policy_nor_the_momentum():
    model = small(n_agents=2)
    model.learn(200)
    before = (model.get_global_parameters(), model.momentum, model.num_timesteps)

    class Stop:
        def __call__(self, params, step):
            raise FloatingPointError("boom")

    solver = model.local_solver(model._round_callback(None), 0.05)
    solver.sample = Stop()
    with pytest.raises(FloatingPointError):
        model.run_atomic_round(solver)
    th.testing.assert_close(model.get_global_parameters(), before[0])
    th.testing.assert_close(model.momentum, before[1])
    assert model.num_timesteps == before[2]


def test_participation_and_robust_aggregation():
    model = small(n_agents=4, participation=0.5, aggregator="median")
    model.learn(400)
    assert model.last_round is not None and model.last_round.n_participants == 2
    assert th.isfinite(model.momentum).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum_coef": 0.0}, r"momentum_coef must be in \(0, 1\]"),
        ({"momentum_coef": 1.5}, r"momentum_coef must be in \(0, 1\]"),
        ({"momentum_coef": "0.5"}, "momentum_coef"),
        ({"max_importance_weight": 0.5}, "max_importance_weight must be None"),
        ({"max_importance_weight": float("inf")}, "max_importance_weight"),
        ({"local_steps": 0}, "local_steps must be a positive integer"),
        ({"learning_rate": -1.0}, "learning_rate must be a finite number > 0"),
        ({"estimator": "td"}, "unknown estimator 'td'"),
        ({"server_learning_rate": 0}, "server_learning_rate"),
    ],
)
def test_bad_hyperparameters_are_refused_before_any_env_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FederatedSVRPGM("MlpPolicy", "sb3_fedpg/DoesNotExist-v0", **kwargs)
    with pytest.raises(ValueError, match=message):
        FedSVRPGMHyperparams(**kwargs)


def test_load_checks_new_hyperparameters(tmp_path):
    model = small(n_agents=2)
    model.save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match="momentum_coef"):
        FederatedSVRPGM.load(tmp_path / "model.zip", momentum_coef=2.0)
    assert FederatedSVRPGM.load(tmp_path / "model.zip", momentum_coef=0.2).momentum_coef == 0.2


def test_the_correction_is_evaluated_at_the_previous_global_parameters(monkeypatch):
    # Eq. (4)'s second gradient is taken at θ̄_{r−1} (θ̄_0 in the first round), on the batch sampled at θ_{i,k}.
    model = small(n_agents=2, local_steps=2)
    model._setup_learn(1, None)
    seen = []
    original = model.learner.importance_weighted_gradient

    def record(params, batch, weights, behaviour, max_weight=None):
        seen.append(params.detach().clone())
        return original(params, batch, weights, behaviour, max_weight)

    monkeypatch.setattr(model.learner, "importance_weighted_gradient", record)
    starts = []
    for _ in range(3):
        starts.append(model.get_global_parameters())
        model.train()
    # round 0: one fresh step (k = 1) at θ̄_0; rounds 1 and 2: both steps at the previous round's start
    expected = [starts[0], starts[0], starts[0], starts[1], starts[1]]
    assert len(seen) == len(expected)
    for params, start in zip(seen, expected, strict=True):
        th.testing.assert_close(params, start.unsqueeze(0).expand(2, -1))

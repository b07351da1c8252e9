"""The noise-aware correction in FederatedPG: measured noise, SNR, variance controls, anchor batches."""

import csv

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure

from sb3_fedpg import FederatedPG

SMALL = dict(n_steps=8, local_steps=3, n_envs_per_agent=4, policy_kwargs=dict(net_arch=[16]))


def model(**kwargs):
    return FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=3, **{"seed": 0, **SMALL, **kwargs})


@pytest.mark.parametrize("variance_control", ["none", "control_variate", "snr_damping", "filtered"])
@pytest.mark.parametrize("estimator", ["gae", "gpomdp"])
def test_variants_train_and_log_the_noise(tmp_path, variance_control, estimator):
    m = model(variance_control=variance_control, estimator=estimator)
    m.set_logger(configure(str(tmp_path), ["csv"]))
    before = m.get_global_parameters()
    m.learn(600)
    assert not th.allclose(before, m.get_global_parameters())
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    for key in ("fed/anchor_noise", "fed/correction_snr", "fed/correction_beta"):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert values and all(np.isfinite(v) and v >= 0 for v in values), key


def test_the_default_is_bit_identical_to_the_papers_solver():
    # variance_control="none" goes through fedmath.run_local_steps exactly as the paper's solver does:
    # the same parameters as an explicit CorrectedGradientSteps round on the same batches.
    # b is built after a has trained: on a GPU the rollouts draw from torch's global generator, which b's seed resets.
    # (per-agent normalisation: learner.gradients normalises a batch on its own, the shared scale is the server's)
    a = model(seed=3, normalize_advantage="per_agent")
    a.learn(1)
    b = model(seed=3, normalize_advantage="per_agent")
    from stable_baselines3.common.callbacks import CallbackList

    from sb3_fedpg.common import fedmath

    b._setup_learn(1, None)
    callback = CallbackList([])
    callback.init_callback(b)
    theta = b.get_global_parameters()
    grad_fn = lambda params, step: b.learner.gradients(params, b.sample_batch(params.detach(), callback))
    update = b.local_optimizer_state.make_update(b.current_learning_rate(), None)
    result = fedmath.fedpg_round(theta, grad_fn, 3, b.local_steps, update)
    th.testing.assert_close(a.get_global_parameters(), result.params, rtol=0, atol=0)


def test_anchor_batches_are_counted_and_averaged():
    m = model(anchor_batches=3, local_steps=2)
    m.learn(1)
    # a round: 3 anchor batches (the first reused for ℓ = 0) + 1 fresh batch
    assert m.num_timesteps == 4 * m.n_envs * m.n_steps


def test_control_variate_removes_the_anchor_noise_in_the_first_fresh_step():
    # With one agent, g = a_1 and every variant's correction vanishes in expectation; the control variate's direction
    # at ℓ = 1 is ĝ(θ_1; B_1) − ĝ(θ̄; B_1) + g: at θ_1 = θ̄ (learning rate → 0) it is exactly g.
    m = FederatedPG("MlpPolicy", "CartPole-v1", n_agents=1, learning_rate=1e-12, variance_control="control_variate", **SMALL)
    m.learn(1)
    res = m.last_round
    expected = res.params_before + 1e-12 * res.global_grad * m.local_steps
    th.testing.assert_close(res.local_params[0], expected, rtol=0, atol=1e-9)


def test_snr_damping_with_identical_agents_switches_the_correction_off():
    m = FederatedPG(
        "MlpPolicy",
        "sb3_fedpg/HeteroCartPole-v0",
        n_agents=4,
        env_kwargs={"heterogeneity": 0.0},
        variance_control="snr_damping",
        seed=1,
        **SMALL,
    )
    betas = []
    for _ in range(5):
        m.learn(1, reset_num_timesteps=False)
        betas.append(m.learner.stats.means()["fed/correction_beta"])
    # identical agents: the measured correction is noise, β stays small on average
    assert np.nanmean(betas) < 0.5, betas


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="unknown variance_control 'svrg'"):
        model(variance_control="svrg")
    with pytest.raises(ValueError, match=r"anchor_batches must be 'auto' or a positive integer"):
        model(anchor_batches=0)


def test_filtered_correction_memory_is_saved_and_resumed_bit_identically(tmp_path):
    # The filter's estimate ĉ_i, its variance and drift are agent memory: save + load + continue must equal one run.
    rounds = 4
    # On the CPU the rollouts draw from a NumPy generator the model holds, which save() keeps; on a GPU they draw
    # from torch's global one, which only save_checkpoint() keeps: the continuation is compared on the CPU.
    straight = model(variance_control="filtered", seed=2, device="cpu")
    for _ in range(rounds):
        straight.learn(1, reset_num_timesteps=False)
    first = model(variance_control="filtered", seed=2, device="cpu")
    for _ in range(2):
        first.learn(1, reset_num_timesteps=False)
    assert first.correction_stats.estimate.shape == (3, first.learner.actor.n_params)
    first.save(tmp_path / "m.zip")
    resumed = FederatedPG.load(tmp_path / "m.zip", env=first.get_env(), device="cpu")
    th.testing.assert_close(resumed.correction_stats.estimate, first.correction_stats.estimate, rtol=0, atol=0)
    resumed._last_obs = first._last_obs  # continue the same episodes (the env is shared)
    for _ in range(rounds - 2):
        resumed.learn(1, reset_num_timesteps=False)
    gains = [resumed.learner.stats.means()["fed/correction_gain"]]
    assert 0 < gains[0] <= 1
    th.testing.assert_close(resumed.get_global_parameters(), straight.get_global_parameters(), rtol=0, atol=0)


def test_filtered_correction_follows_the_filter():
    # H = 1 with the anchor reused: the only local direction is a_i + ĉ_i (the paper's would be g), one SGD step.
    m = model(variance_control="filtered", local_steps=1, learning_rate=1e-2, local_optimizer="sgd")
    for _ in range(3):
        m.learn(1, reset_num_timesteps=False)
    res, estimate = m.last_round, m.correction_stats.estimate
    assert not th.allclose(estimate, res.global_grad - res.anchor_grads, atol=1e-3)  # the filter kept a memory
    th.testing.assert_close(res.local_params - res.params_before, 1e-2 * (res.anchor_grads + estimate), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "local_steps, correction, expected",
    [(4, True, 1), (12, True, 1), (13, True, 2), (20, True, 4), (50, True, 25), (50, False, 1), (120, True, 120)],
)
def test_auto_anchor_batches_grow_with_the_local_steps(local_steps, correction, expected):
    m = model(local_steps=local_steps, correction=correction)
    assert m.anchor_batches == "auto" and m.n_anchor_batches == expected
    m.learn(1)
    # a round: k anchor batches (the first reused for ℓ = 0) + H − 1 fresh ones
    assert m.num_timesteps == (expected + local_steps - 1) * m.n_envs * m.n_steps

"""FederatedPPO's surrogate correction: an advantage shift whose gradient at θ̄ turns each agent's a_i into g."""

import zipfile

import numpy as np
import pytest
import torch as th

from sb3_fedpg import FederatedPPO
from sb3_fedpg.common import fedmath
from sb3_fedpg.common.hyperparams import ppo_correction_mode
from sb3_fedpg.ppo.local_solver import BatchedAdam, conjugate_gradient


def test_conjugate_gradient_solves_each_row_its_own_system():
    gen = th.Generator().manual_seed(0)
    n, p = 3, 6
    factors = th.randn(n, p, p, generator=gen, dtype=th.float64)
    matrices = factors @ factors.transpose(1, 2) + 0.5 * th.eye(p, dtype=th.float64)
    rhs = th.randn(n, p, generator=gen, dtype=th.float64)
    x = conjugate_gradient(lambda v: (matrices @ v.unsqueeze(2)).squeeze(2), rhs, steps=50)
    th.testing.assert_close(x, th.linalg.solve(matrices, rhs), rtol=1e-9, atol=1e-9)


def test_correction_argument_modes():
    assert ppo_correction_mode(False) is None and ppo_correction_mode("none") is None
    assert ppo_correction_mode(True) == "linear" and ppo_correction_mode("surrogate") == "surrogate"
    with pytest.raises(ValueError, match="'linear' or 'surrogate'"):
        ppo_correction_mode("sideways")
    with pytest.raises(ValueError, match="correction must be False, True"):
        FederatedPPO("MlpPolicy", "sb3_fedpg/HeteroPointMass-v0", n_agents=2, correction="sideways")


def _round(correction, net_arch, n_epochs=1, batch_size=None, learning_rate=1e-3, seed=0, exact_solve=True):
    """One round's anchors, g and the first local step's actor gradient of every agent (recorded at Adam)."""
    model = FederatedPPO(
        "MlpPolicy",
        "sb3_fedpg/HeteroPointMass-v0",
        n_agents=4,
        n_envs_per_agent=4,
        n_steps=64,
        batch_size=batch_size or 4 * 64,  # one minibatch: the whole rollout
        n_epochs=n_epochs,
        max_grad_norm=None,
        correction=correction,
        variance_control="none",  # the correction itself, undamped (snr_damping scales it: tested below)
        policy_kwargs={"net_arch": net_arch},
        seed=seed,
        device="cpu",
    )
    model._setup_learn(10_000)
    solver = model.local_solver(model._round_callback(None), learning_rate)
    if exact_solve:  # no damping, conjugate gradient to convergence
        solver.settings.correction_damping, solver.settings.correction_cg_steps = 1e-8, 200
    theta = model.get_global_parameters()
    anchors, _ = fedmath.solver_anchors(solver, theta, model.n_agents)
    global_grad = anchors.mean(0)
    grads = []
    original = BatchedAdam.step_

    def recording(self, params, grad, lr, agents=None):
        grads.append(grad[:, : theta.numel()].clone())
        return original(self, params, grad, lr, agents)

    BatchedAdam.step_ = recording
    try:
        local = solver.local_round(theta, anchors, global_grad)
    finally:
        BatchedAdam.step_ = original
    return theta, anchors, global_grad, grads, local, solver


@pytest.mark.parametrize("correction", ["surrogate", "linear"])
def test_first_corrected_step_follows_the_global_gradient(correction):
    # A linear policy (more samples than parameters): the Fisher solve is exact, and every agent's first step,
    # at θ̄ where the ratio is 1, descends -g: the Fast-FedPG step, whatever the agent's own a_i.
    _, anchors, global_grad, grads, _, solver = _round(correction, net_arch=[])
    # what is left of each agent's disagreement with g (1 = uncorrected)
    left = (-grads[0] - global_grad).norm(dim=1) / (anchors - global_grad).norm(dim=1)
    assert float(left.max()) < 1e-2, left
    # ... and the agents do disagree: without the correction each follows its own gradient
    assert float((anchors - global_grad).norm(dim=1).min()) > 0.05 * float(global_grad.norm())
    if correction == "surrogate":
        assert solver.stats.means()["train/correction_fit"] < 1e-3


def test_without_correction_the_first_step_is_the_agents_own_gradient():
    _, anchors, _, grads, _, _ = _round(False, net_arch=[])
    th.testing.assert_close(-grads[0], anchors, rtol=1e-4, atol=1e-5 * float(anchors.abs().max()))


def test_surrogate_fit_on_a_neural_policy_with_the_default_solve():
    # More parameters than samples, damped solve: the first step removes most of each agent's disagreement with g
    _, anchors, global_grad, grads, _, solver = _round("surrogate", net_arch=[32, 32], exact_solve=False)
    left = (-grads[0] - global_grad).norm(dim=1) / (anchors - global_grad).norm(dim=1)
    fit = solver.stats.means()["train/correction_fit"]
    print(f"left {left.tolist()}, fit {fit}")
    assert float(left.max()) < 0.5 and fit < 0.5


def _kl_after_epochs(correction):
    _, _, _, _, local, solver = _round(
        correction, net_arch=[32, 32], n_epochs=100, batch_size=64, learning_rate=1e-2, seed=1, exact_solve=False
    )
    data = solver.round_memory()
    with th.no_grad():
        new = solver.actor.distribution(local, data["obs"]).log_prob(data["actions"])
    log_ratio = new - data["old_log_prob"]
    return float(((log_ratio.exp() - 1) - log_ratio).mean())


def test_surrogate_correction_stays_in_the_trust_region_where_the_linear_one_does_not():
    # Many epochs: PPO's clip stops each agent's own surrogate; the surrogate correction is clipped with it,
    # the linear term keeps pushing (rescaled by Adam) once the ratios have left the clip range.
    kl = {c: _kl_after_epochs(c) for c in (False, "surrogate", "linear")}
    assert kl["surrogate"] < 2.0 * kl[False], kl
    assert kl["linear"] > 5.0 * kl["surrogate"], kl
    assert np.isfinite(list(kl.values())).all()


@pytest.mark.parametrize("env_id", ["sb3_fedpg/HeteroPointMass-v0", "sb3_fedpg/HeteroCartPole-v0"])
def test_shift_through_autograd_equals_the_hand_written_products(env_id):
    # CNN, Dict, Dropout and Multi* policies take the torch.func path; flat MLPs the hand-written one
    model = FederatedPPO("MlpPolicy", env_id, n_agents=3, n_envs_per_agent=2, n_steps=32, correction="surrogate", seed=3)
    model._setup_learn(1_000)
    solver = model.local_solver(model._round_callback(None), 3e-4)
    theta = model.get_global_parameters()
    anchors, _ = fedmath.solver_anchors(solver, theta, model.n_agents)
    correction = anchors.mean(0, keepdim=True) - anchors
    assert solver.hand_written
    hand = solver.surrogate_shift(theta, correction)
    solver.hand_written = False
    autograd = solver.surrogate_shift(theta, correction)
    assert float((hand - autograd).norm() / autograd.norm()) < 5e-2  # central differences vs exact JVPs, through CG


# ---------------------------------------------------------------- snr_damping: the correction shrunk by its SNR
def _solver(variance_control, heterogeneity=1.0, seed=0, n_steps=64):
    model = FederatedPPO(
        "MlpPolicy",
        "sb3_fedpg/HeteroPointMass-v0",
        n_agents=4,
        n_envs_per_agent=4,
        n_steps=n_steps,
        n_epochs=1,
        correction="surrogate",
        variance_control=variance_control,
        env_kwargs={"heterogeneity": heterogeneity},
        seed=seed,
        device="cpu",
    )
    model._setup_learn(10_000)
    return model, model.local_solver(model._round_callback(None), 1e-3)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_snr_damping_scales_the_correction_by_beta(monkeypatch, beta):
    # β = 0: the round is the uncorrected one; β = 1: the undamped surrogate correction (same rollout, same draws)
    results = {}
    for variance_control in ("snr_damping", "none"):
        model, solver = _solver(variance_control)
        if variance_control == "snr_damping":
            monkeypatch.setattr(type(solver), "snr_damping", lambda self, a, g: th.full((a.shape[0],), beta))
        if beta == 0.0 and variance_control == "none":
            solver.settings.correction = None
        theta = model.get_global_parameters()
        anchors, _ = fedmath.solver_anchors(solver, theta, model.n_agents)
        th.manual_seed(1)
        results[variance_control] = solver.local_round(theta, anchors, anchors.mean(0))
    th.testing.assert_close(results["snr_damping"], results["none"], rtol=1e-5, atol=1e-6)


SEED = 0


def test_snr_is_high_where_agents_disagree_and_low_where_they_do_not():
    # Identical agents: g − a_i is pure sampling noise, β → small; agents with other goals: signal, β larger.
    betas = {}
    for heterogeneity in (0.0, 1.0):
        model, solver = _solver("snr_damping", heterogeneity, seed=SEED, n_steps=512)
        theta = model.get_global_parameters()
        for _ in range(8):  # the SNR is a running average over rounds
            anchors, _ = fedmath.solver_anchors(solver, theta, model.n_agents)
            beta = solver.snr_damping(anchors, anchors.mean(0))
        betas[heterogeneity] = float(beta.mean())
    assert betas[0.0] < 0.2 and betas[1.0] > 2.5 * betas[0.0], betas


def test_snr_statistics_are_saved_and_rolled_back(tmp_path):
    model, _ = _solver("snr_damping")
    model.learn(model.steps_per_round * 2)
    assert float(model.correction_stats.weight) > 0
    model.save(tmp_path / "m.zip")
    loaded = FederatedPPO.load(tmp_path / "m.zip")
    th.testing.assert_close(loaded.correction_stats.signal, model.correction_stats.signal)
    # a file saved before the statistics existed loads with fresh ones
    with zipfile.ZipFile(tmp_path / "m.zip") as src, zipfile.ZipFile(tmp_path / "old.zip", "w") as dst:
        for item in src.infolist():
            if item.filename != "correction_stats.pth":
                dst.writestr(item, src.read(item.filename))
    fresh = FederatedPPO.load(tmp_path / "old.zip")
    assert float(fresh.correction_stats.weight) == 0
    th.testing.assert_close(fresh.critics.params, model.critics.params)
    # a dict given to set_parameters without them is refused with exact_match, as in SB3
    params = model.get_parameters()
    del params["correction_stats"]
    with pytest.raises(ValueError, match="Names of parameters do not match"):
        fresh.set_parameters(params)
    fresh.set_parameters(params, exact_match=False)

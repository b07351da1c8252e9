"""
gSDE (``use_sde=True``): SB3's state-dependent exploration on the batched actor.

Each agent's ``log_std`` (gSDE's ``(latent_dim, action_dim)`` matrix) is part of its federated row; every
sub-environment of every agent holds its own exploration matrix, drawn from its agent's ``σ`` at the start of each
rollout and every ``sde_sample_freq`` steps. The log-probabilities and entropies the gradients use are SB3's
``StateDependentNoiseDistribution``'s, per agent row.
"""

import numpy as np
import pytest
import torch as th
from scipy import stats
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.distributions import StateDependentNoiseDistribution

from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM
from sb3_fedpg.common.batched_policy import BatchedActor

ALGOS = [FederatedPG, FederatedPPO, FederatedSVRPGM]
POINT_MASS = "sb3_fedpg/HeteroPointMass-v0"  # two-dimensional Box actions


def gsde_model(algo=FederatedPPO, env="Pendulum-v1", n_agents=2, seed=0, policy_kwargs=None, **kwargs):
    settings = dict(n_agents=n_agents, n_envs_per_agent=2, n_steps=8, use_sde=True, seed=seed, device="cpu")
    if algo is FederatedPPO:
        settings["batch_size"] = 8
    policy_kwargs = {"net_arch": [8], "log_std_init": -1.0, **(policy_kwargs or {})}
    return algo("MlpPolicy", env, policy_kwargs=policy_kwargs, **{**settings, **kwargs})


def perturbed_rows(model, n, scale=0.3, seed=0):
    """Every agent its own parameters (its log_std included): the rows the batched code must keep apart."""
    gen = th.Generator().manual_seed(seed)
    theta = model.get_global_parameters().double()
    return theta + scale * th.randn(n, theta.numel(), generator=gen, dtype=th.float64)


def sb3_distribution(policy, obs):
    """
    SB3's own gSDE distribution of the policy at flat observations ``obs``: its latent features, mean and log_std
    from its modules (``get_distribution`` without its preprocessing, a cast to float32 that would bar float64).
    """
    dist = policy._get_action_dist_from_latent(policy.mlp_extractor.forward_actor(obs))
    assert isinstance(dist, StateDependentNoiseDistribution)
    return dist


# ------------------------------------------------------------------------------ the distribution is SB3's
@pytest.mark.parametrize("n_agents", [1, 3])
@pytest.mark.parametrize(
    "gsde_kwargs",
    [{}, {"full_std": False}, {"use_expln": True}, {"squash_output": True}],
    ids=["full_std", "one_std_per_latent", "expln", "squashed"],
)
def test_log_prob_and_entropy_are_sb3s(n_agents, gsde_kwargs):
    # float64 on both sides: the comparison is to 1e-6, well above the rounding of either
    model = gsde_model(env=POINT_MASS, n_agents=n_agents, policy_kwargs={"net_arch": [16], **gsde_kwargs})
    policy = model.policy.double()
    actor = BatchedActor(policy)
    params = perturbed_rows(model, n_agents)
    if gsde_kwargs.get("use_expln"):  # both branches of expln: log σ above and below 0
        params[:, actor.log_std] += th.linspace(-1.5, 2.5, actor.log_std.stop - actor.log_std.start, dtype=th.float64)
    gen = th.Generator().manual_seed(1)
    obs = th.randn(n_agents, 32, policy.observation_space.shape[0], generator=gen, dtype=th.float64)
    actions = th.randn(n_agents, 32, 2, generator=gen, dtype=th.float64)
    if gsde_kwargs.get("squash_output"):
        actions = th.tanh(actions)
    leaf = params.clone().requires_grad_(True)
    log_prob, entropy = actor.log_prob_entropy(leaf, obs, actions)
    (grad,) = th.autograd.grad(log_prob.sum(), leaf)
    for i in range(n_agents):
        actor.set_vector(params[i])
        policy.zero_grad()
        sb3 = sb3_distribution(policy, obs[i])
        expected = sb3.log_prob(actions[i])
        th.testing.assert_close(log_prob[i], expected.detach(), rtol=0, atol=1e-6)
        sb3_entropy = sb3.entropy()
        # SB3's PPO/A2C estimate a squashed distribution's entropy (no analytical form) by -log π of the batch
        th.testing.assert_close(entropy[i], -expected.detach() if sb3_entropy is None else sb3_entropy.detach())
        # the gradient of log π, log_std's part included (the latent features enter the variance detached, as in SB3)
        expected.sum().backward()
        sb3_grad = th.cat([p.grad.flatten() for p in actor.parameters])
        th.testing.assert_close(grad[i], sb3_grad, rtol=1e-6, atol=1e-6)


def test_variance_is_latent_squared_times_sigma_squared():
    # The law itself, written out: Var(a_j | s) = Σ_k z_k² σ_kj² + ε (Raffin et al. 2021, eq. 4; SB3's epsilon)
    model = gsde_model(env=POINT_MASS, n_agents=2, policy_kwargs={"net_arch": [4]})
    actor = model._actor
    params = perturbed_rows(model, 2).float()
    obs = th.randn(2, 5, model.observation_space.shape[0])
    dist = actor.distribution(params, obs)
    _, latent = actor._mean_and_latent(params, obs)
    sigma = params[:, actor.log_std].view(2, 4, 2).exp()
    variance = (latent.square().unsqueeze(-1) * sigma.square().unsqueeze(1)).sum(2) + 1e-6
    th.testing.assert_close(dist.gaussian.variance, variance)


def test_samples_follow_the_scored_law():
    # Over fresh exploration matrices, the action at a fixed state is N(μ(s), z(s)²σ² + ε): what log_prob scores.
    model = gsde_model(env=POINT_MASS, n_agents=2, policy_kwargs={"net_arch": [8]})
    actor = model._actor
    params = perturbed_rows(model, 2, scale=0.5).float()
    n_draws = 4000
    obs = th.randn(2, 1, model.observation_space.shape[0]).expand(2, n_draws, -1)
    actor.reset_noise(params, n_draws, np.random.default_rng(0))  # one matrix per "sub-environment": n_draws draws
    samples = actor.sample(params, obs)
    gaussian = actor.distribution(params, obs[:, :1]).gaussian
    z = (samples - gaussian.mean) / (gaussian.variance - 1e-6).sqrt()
    for i in range(2):
        for j in range(2):
            assert stats.kstest(z[i, :, j].numpy(), "norm").pvalue > 1e-4, (i, j)


def test_sample_adds_each_sub_environments_noise_as_sb3():
    # SB3's get_noise with one matrix per env (reset_noise(n_envs)): the same actions from the same matrices
    model = gsde_model(env=POINT_MASS, n_agents=2, n_envs_per_agent=3, policy_kwargs={"squash_output": True})
    actor, policy = model._actor, model.policy
    params = perturbed_rows(model, 2).float()
    obs = th.randn(2, 3, model.observation_space.shape[0])
    actor.reset_noise(params, 3)
    actions = actor.sample(params, obs)
    for i in range(2):
        actor.set_vector(params[i])
        with th.no_grad():
            dist = sb3_distribution(policy, obs[i])
            dist.exploration_matrices = actor.exploration[i]
            th.testing.assert_close(actions[i], dist.sample())
    assert actions.abs().max() <= 1.0  # squashed: unscaled to the action space by the rollout, as in SB3


# ------------------------------------------------------------------------------ exploration matrices
def counting_resamples(model, monkeypatch):
    draws = []
    original = model._actor.reset_noise

    def reset_noise(params, n_envs, rng=None):
        original(params, n_envs, rng)
        draws.append(model._actor.exploration.clone())

    monkeypatch.setattr(model._actor, "reset_noise", reset_noise)
    return draws


@pytest.mark.parametrize("sde_sample_freq, per_rollout", [(-1, 1), (3, 3), (8, 1), (1, 8)])
def test_matrices_are_drawn_at_each_rollout_start_and_every_sde_sample_freq_steps(monkeypatch, sde_sample_freq, per_rollout):
    # n_steps=8: at steps 0 (the rollout's start), then every sde_sample_freq steps (3: steps 0, 3, 6)
    model = gsde_model(FederatedPPO, sde_sample_freq=sde_sample_freq)
    draws = counting_resamples(model, monkeypatch)
    callback = CallbackList([])
    callback.init_callback(model)
    model._setup_learn(1, None)
    seen = []
    params = perturbed_rows(model, 2).float()
    callback.on_step = lambda: seen.append(len(draws)) or True  # the draws before each env step
    model.collect_batch(params, callback)
    assert len(draws) == per_rollout
    starts = [k for k in range(8) if k == 0 or (sde_sample_freq > 0 and k % sde_sample_freq == 0)]
    assert seen == [sum(s <= k for s in starts) for k in range(8)]
    model.collect_batch(params, callback)  # the next rollout starts with new matrices
    assert len(draws) == 2 * per_rollout and not th.equal(draws[per_rollout - 1], draws[per_rollout])


def test_matrices_are_each_agents_and_each_sub_environments_own(monkeypatch):
    model = gsde_model(FederatedPPO, env=POINT_MASS, n_agents=3, n_envs_per_agent=2, policy_kwargs={"net_arch": [8]})
    params = perturbed_rows(model, 3).float()
    params[:, model._actor.log_std] = th.tensor([-6.0, -2.0, 1.0]).unsqueeze(1)  # agent i's σ = e^{-6}, e^{-2}, e^{1}
    model.reset_exploration(params)
    matrices = model._actor.exploration
    assert matrices.shape == (3, 2, 8, 2)
    flat = matrices.flatten(2)
    for a, b in [((0, 0), (0, 1)), ((1, 0), (2, 0)), ((2, 0), (2, 1))]:
        assert not th.allclose(flat[a], flat[b])
    # each agent's matrices are drawn from its own row's σ
    spread = flat.std(dim=(1, 2))
    np.testing.assert_allclose(spread.log().numpy(), [-6.0, -2.0, 1.0], atol=0.3)


def test_fedpg_draws_matrices_for_every_batch_of_the_round(monkeypatch):
    # FederatedPG's round collects the anchor batch and one batch per local step: each is a rollout
    model = gsde_model(FederatedPG, local_steps=3, reuse_anchor_batch=False)
    draws = counting_resamples(model, monkeypatch)
    model.learn(model.steps_per_round)
    assert len(draws) == 1 + 3


def test_predict_samples_from_the_global_log_std():
    # predict(deterministic=False) uses the SB3 policy's own matrix: drawn again from the new global σ each round
    model = gsde_model(FederatedPPO, env=POINT_MASS)
    theta = model.get_global_parameters()
    theta[model._actor.log_std] = -30.0  # σ ≈ 0: the stochastic prediction is the deterministic one
    model.set_global_parameters(theta)
    obs = np.zeros((4, model.observation_space.shape[0]), dtype=np.float32)
    np.testing.assert_allclose(model.predict(obs)[0], model.predict(obs, deterministic=True)[0], atol=1e-6)


# ------------------------------------------------------------------------------ training and files
@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_same_training(algo):
    runs = []
    for _ in range(2):
        model = gsde_model(algo, sde_sample_freq=4, policy_kwargs={"squash_output": algo is FederatedPPO})
        model.learn(3 * model.steps_per_round)
        runs.append(model.get_global_parameters())
    th.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    other = gsde_model(algo, seed=1, sde_sample_freq=4, policy_kwargs={"squash_output": algo is FederatedPPO})
    assert not th.allclose(runs[0], other.learn(3 * other.steps_per_round).get_global_parameters())


@pytest.mark.parametrize("file_format", ["sb3", "safetensors"])
@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
def test_save_load_keeps_log_std_and_predictions(tmp_path, algo, file_format):
    model = gsde_model(algo, env=POINT_MASS, sde_sample_freq=4, policy_kwargs={"full_std": False, "use_expln": True})
    model.learn(model.steps_per_round)
    path = tmp_path / "model.zip"
    model.save(path, format=file_format)
    loaded = algo.load(path, device="cpu")
    assert loaded.use_sde and loaded.sde_sample_freq == 4 and loaded._actor.gsde == model._actor.gsde
    log_std = model._actor.log_std
    th.testing.assert_close(loaded.get_global_parameters()[log_std], model.get_global_parameters()[log_std])
    th.testing.assert_close(loaded.get_global_parameters(), model.get_global_parameters())
    obs = np.random.default_rng(0).standard_normal((5, model.observation_space.shape[0])).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="use_sde=False cannot be set by load"):
        algo.load(path, use_sde=False)
    assert algo.load(path, sde_sample_freq=2).sde_sample_freq == 2  # SB3 lets load change it


def test_squashed_actions_are_unscaled_to_the_action_space():
    # SB3's test_sde.py::test_state_dependent_noise: the stored actions are squashed, the env sees them unscaled
    model = gsde_model(FederatedPPO, policy_kwargs={"squash_output": True, "log_std_init": 1.0})  # Pendulum: [-2, 2]
    model._setup_learn(1, None)
    callback = CallbackList([])
    callback.init_callback(model)
    sent = []
    step = model.env.step
    model.env.step = lambda actions: sent.append(actions) or step(actions)
    batch = model.collect_batch(model.get_global_parameters().unsqueeze(0).repeat(2, 1), callback)
    stored, sent = batch.actions.numpy().reshape(-1), np.concatenate(sent).reshape(-1)
    assert np.abs(stored).max() <= 1.0 and np.abs(sent).max() > 1.0
    np.testing.assert_allclose(np.sort(sent), np.sort(2.0 * stored), atol=1e-6)


@pytest.mark.slow
def test_gsde_ppo_learns_point_mass():
    # A smoke check of the whole path (rollout noise, gSDE log-probs, federated log_std): the return improves
    from stable_baselines3.common.evaluation import evaluate_policy

    model = FederatedPPO(
        "MlpPolicy",
        POINT_MASS,
        n_agents=2,
        n_envs_per_agent=4,
        n_steps=64,
        batch_size=64,
        learning_rate=1e-3,
        use_sde=True,
        sde_sample_freq=4,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [32, 32], "log_std_init": -1.0},
    )
    before, _ = evaluate_policy(model, model.env, n_eval_episodes=16)
    model.learn(20_000)
    after, _ = evaluate_policy(model, model.env, n_eval_episodes=16)
    assert after > before + 0.5 * abs(before), (before, after)

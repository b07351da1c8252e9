"""
Every keyword argument of SB3's ``ActorCriticPolicy`` is either honoured by the federated algorithms (its effect
is checked) or refused with a clear error — never silently ignored. The table below must list exactly the
constructor's keys, so a key SB3 adds later fails this test until it is audited.
"""

import inspect

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import nn

from sb3_fedpg import FederatedPG, FederatedPPO

ALGOS = [FederatedPG, FederatedPPO]


def build(algo, env="CartPole-v1", seed=0, **policy_kwargs):
    return algo("MlpPolicy", env, n_agents=2, n_envs_per_agent=2, n_steps=8, seed=seed, policy_kwargs=policy_kwargs)


def linear_shapes(module):
    return [tuple(m.weight.shape) for m in module.modules() if isinstance(m, nn.Linear)]


def check_net_arch(algo):
    model = build(algo, net_arch=dict(pi=[7], vf=[9, 3]))
    # CartPole: 4 inputs, 2 actions; actor 4-7-2, each agent's critic 4-9-3-1
    assert model.n_federated_params == 4 * 7 + 7 + 7 * 2 + 2
    assert model.critics.params.shape == (2, 4 * 9 + 9 + 9 * 3 + 3 + 3 + 1)
    assert build(algo, net_arch=[5]).n_federated_params == 4 * 5 + 5 + 5 * 2 + 2


def check_activation_fn(algo):
    model = build(algo, activation_fn=nn.ELU)
    assert any(isinstance(op, nn.ELU) for op in model._actor.net.mlp.ops)
    obs = th.randn(2, 3, 4, device=model.device)
    theta = model.get_global_parameters()
    logits = model._actor.distribution(theta.expand(2, -1), obs).logits[0]
    th.testing.assert_close(logits, model.policy.get_distribution(obs[0]).distribution.logits)


def check_ortho_init(algo):
    ortho, plain = build(algo, ortho_init=True), build(algo, ortho_init=False)
    assert not th.allclose(ortho.get_global_parameters(), plain.get_global_parameters())
    # SB3's orthogonal init gives the action layer gain 0.01: tiny weights
    assert ortho.policy.action_net.weight.abs().max() < plain.policy.action_net.weight.abs().max()


def check_log_std_init(algo):
    model = build(algo, env="Pendulum-v1", log_std_init=-1.3)
    th.testing.assert_close(model.get_global_parameters()[model._actor.log_std].cpu(), th.tensor([-1.3]))


def check_share_features_extractor(algo):
    model = build(algo, share_features_extractor=False)
    assert not model.policy.share_features_extractor
    model.learn(64)
    assert model.predict(model.env.reset(), deterministic=True)[0].shape == (4,)


def check_features_extractor_class(algo):
    model = build(algo, features_extractor_class=FlattenExtractor, features_extractor_kwargs={})
    assert type(model.policy.features_extractor) is FlattenExtractor


def build_gsde(algo, **policy_kwargs):
    return algo("MlpPolicy", "sb3_fedpg/HeteroPointMass-v0", n_agents=2, n_envs_per_agent=2, n_steps=8, seed=0,
                use_sde=True, policy_kwargs={"net_arch": [5], **policy_kwargs})  # fmt: skip


def check_use_sde(algo):
    # the algorithm's use_sde sets the policy's (as in SB3); policy_kwargs may repeat it, not contradict it
    assert build_gsde(algo, use_sde=True)._actor.gsde is not None
    with pytest.raises(ValueError, match=r"policy_kwargs\['use_sde'\]=True but .*Pass use_sde to the algorithm"):
        build(algo, env="Pendulum-v1", use_sde=True)


def check_full_std(algo):
    # a (latent_dim, action_dim) log_std, or one σ per latent feature: 5 x 2 or 5 federated entries
    for full_std, size in ((True, 10), (False, 5)):
        model = build_gsde(algo, full_std=full_std)
        assert model._actor.log_std.stop - model._actor.log_std.start == size


def check_use_expln(algo):
    model = build_gsde(algo, use_expln=True)
    log_std = th.linspace(-2, 2, 10).view(5, 2)
    expected = model.policy.action_dist.get_std(log_std)
    th.testing.assert_close(model._actor.gsde.std(log_std.reshape(1, -1))[0], expected)
    assert not th.allclose(expected, log_std.exp())


def check_squash_output(algo):
    model = build_gsde(algo, squash_output=True, log_std_init=2.0)
    assert model._actor.gsde.squash and model.policy.squash_output
    model.learn(64)
    assert model.predict(model.env.reset())[0].shape == (4, 2)


def check_normalize_images(algo):
    # Vector observations: SB3 only normalises image spaces, so both values train the same policy.
    params = [build(algo, normalize_images=flag).learn(64).get_global_parameters() for flag in (True, False)]
    th.testing.assert_close(params[0], params[1])


def check_optimizer_class(algo):
    # every agent's local optimiser (tests/fedpg/test_torch_optimizer.py, tests/ppo/test_torch_optimizer.py pin it)
    model = build(algo, optimizer_class=th.optim.RMSprop, optimizer_kwargs=dict(alpha=0.9))
    rows = model.local_optimizer_state if algo is FederatedPG else model.actor_optimizer
    assert type(rows.optimizer) is th.optim.RMSprop and rows.optimizer.param_groups[0]["alpha"] == 0.9
    before = model.get_global_parameters().clone()
    model.learn(64)
    assert not th.equal(model.get_global_parameters(), before)
    assert all(rows.optimizer.state[leaf]["step"] > 0 for leaf in rows.leaves)


def check_optimizer_kwargs(algo):
    # without optimizer_class they configure SB3's default class, th.optim.Adam
    model = build(algo, optimizer_kwargs=dict(eps=1e-6))
    rows = model.local_optimizer_state if algo is FederatedPG else model.actor_optimizer
    assert type(rows.optimizer) is th.optim.Adam and rows.optimizer.param_groups[0]["eps"] == 1e-6


HONOURED = {
    "net_arch": check_net_arch,
    "activation_fn": check_activation_fn,
    "ortho_init": check_ortho_init,
    "log_std_init": check_log_std_init,
    "share_features_extractor": check_share_features_extractor,
    # Custom extractors and image normalisation belong to the observation side (CnnPolicy, MultiInputPolicy).
    "features_extractor_class": check_features_extractor_class,
    "features_extractor_kwargs": check_features_extractor_class,
    "normalize_images": check_normalize_images,
    "optimizer_class": check_optimizer_class,
    "optimizer_kwargs": check_optimizer_kwargs,
    # gSDE (use_sde=True, Box actions) and the keys that shape it
    "use_sde": check_use_sde,
    "full_std": check_full_std,
    "use_expln": check_use_expln,
    "squash_output": check_squash_output,
}


def test_every_policy_kwarg_is_audited():
    keys = set(inspect.signature(ActorCriticPolicy.__init__).parameters) - {"self", "observation_space", "action_space"}
    keys -= {"lr_schedule"}  # given by the algorithm
    assert keys == set(HONOURED)  # every key is honoured (gSDE's only with use_sde=True)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("key", sorted(HONOURED))
def test_honoured_policy_kwargs(algo, key):
    HONOURED[key](algo)


#: gSDE's keys without use_sde=True: refused (SB3 ignores full_std/use_expln there and asserts on squash_output)
GSDE_ONLY = {
    "full_std": (False, "has no effect in .* without gSDE: it only shapes gSDE's noise. Pass use_sde=True"),
    "use_expln": (True, "has no effect in .* without gSDE: it only shapes gSDE's noise. Pass use_sde=True"),
    "squash_output": (True, r"only available when using gSDE \(use_sde=True\)"),
}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "optimizer_class, message", [(th.optim.LBFGS, "needs a closure"), (th.optim.SparseAdam, "sparse gradients only")]
)
def test_optimisers_that_cannot_be_local_are_refused(algo, optimizer_class, message):
    with pytest.raises(ValueError, match=rf"optimizer_class'\]='{optimizer_class.__name__}' \({algo.__name__}\).*{message}"):
        build(algo, optimizer_class=optimizer_class)


def test_fedsvrpgm_refuses_a_local_optimiser():
    from sb3_fedpg import FederatedSVRPGM

    for key, value in (("optimizer_class", th.optim.SGD), ("optimizer_kwargs", {"eps": 1e-5})):
        with pytest.raises(ValueError, match=rf"policy_kwargs\['{key}'\] is not supported by FederatedSVRPGM: the local step"):
            build(FederatedSVRPGM, **{key: value})
    build(FederatedSVRPGM, optimizer_kwargs=None)  # SB3's default value asks for nothing


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("key", sorted(GSDE_ONLY))
def test_gsde_keys_are_refused_without_gsde(algo, key):
    value, message = GSDE_ONLY[key]
    with pytest.raises(ValueError, match=message):
        build(algo, env="Pendulum-v1", **{key: value})


@pytest.mark.parametrize("algo", ALGOS)
def test_gsde_settings_are_checked(algo):
    with pytest.raises(ValueError, match="sde_sample_freq=4 only applies with gSDE: pass use_sde=True"):
        algo("MlpPolicy", "Pendulum-v1", n_steps=8, sde_sample_freq=4)
    with pytest.raises(ValueError, match=r"gSDE.*can only be used with continuous actions"):  # SB3's test_sde_check
        algo("MlpPolicy", "CartPole-v1", n_steps=8, use_sde=True)
    # squash_output without gSDE is SB3's AssertionError too (test_sde.py::test_only_sde_squashed)
    with pytest.raises(AssertionError, match=r"use_sde=True"):
        algo("MlpPolicy", "Pendulum-v1", n_steps=8, policy_kwargs={"squash_output": True})
    # the false values SB3 configs carry are accepted
    assert not algo("MlpPolicy", "Pendulum-v1", n_steps=8, use_sde=False, policy_kwargs={"use_sde": False}).use_sde


def test_load_cannot_switch_gsde_on(tmp_path):
    build(FederatedPG, env="Pendulum-v1").save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match=r"use_sde=True cannot be set by load.*log_std has that distribution.s shape"):
        FederatedPG.load(tmp_path / "m.zip", use_sde=True)
    with pytest.raises(ValueError, match="squash_output"):
        FederatedPG.load(tmp_path / "m.zip", policy_kwargs={"squash_output": True})


def test_activation_with_parameters_is_refused():
    with pytest.raises(NotImplementedError, match="PReLU has parameters"):
        build(FederatedPG, activation_fn=nn.PReLU)


def test_numpy_rollout_handles_only_known_activations():
    # ELU has no NumPy twin: rollouts take the torch path, and the model still trains
    model = build(FederatedPG, activation_fn=nn.ELU)
    assert not model._numpy_rollout
    before = model.get_global_parameters()
    model.learn(64)
    assert np.isfinite(model.get_global_parameters().cpu().numpy()).all()
    assert not th.allclose(before, model.get_global_parameters())

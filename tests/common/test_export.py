"""export_onnx: the ONNX graph's actions are predict(obs, deterministic=True)'s, run by onnxruntime."""

import numpy as np
import pytest
import torch as th

from sb3_fedpg import FederatedPG, FederatedPPO, make_federated_vec_env
from sb3_fedpg.common.export import ACTION_OUTPUT, OBSERVATION_INPUT, export_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _run(path, obs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [OBSERVATION_INPUT]
    assert [o.name for o in session.get_outputs()] == [ACTION_OUTPUT]
    return session.run(None, {OBSERVATION_INPUT: obs})[0]


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
@pytest.mark.parametrize("family", ["sb3_fedpg/HeteroCartPole-v0", "sb3_fedpg/HeteroPointMass-v0"])
def test_onnx_actions_equal_predict(tmp_path, algo, family):
    model = algo("MlpPolicy", family, n_agents=2, n_envs_per_agent=2, n_steps=16, policy_kwargs={"net_arch": [16]}, seed=0)
    model.learn(64)
    if not family.endswith("CartPole-v0"):
        with th.no_grad():  # means beyond the bounds for some observations, so predict's clipping matters
            model.policy.action_net.weight.mul_(300.0)
    rng = np.random.default_rng(0)
    # a batch of real observations and of wider ones (Box actions then reach the clipping)
    obs = np.concatenate([model.env.reset(), 3 * rng.normal(size=(13, *model.observation_space.shape))]).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    path = export_onnx(model, tmp_path / "policy.onnx")
    actions = _run(path, obs)
    assert actions.shape == expected.shape and actions.dtype == expected.dtype
    if family.endswith("CartPole-v0"):
        np.testing.assert_array_equal(actions, expected)  # Discrete: the argmax index
    else:
        np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)  # Box: the mean, clipped as predict clips
        low, high = model.action_space.low, model.action_space.high
        assert ((actions == low) | (actions == high)).any()  # the clipping was exercised
    np.testing.assert_allclose(_run(path, obs[:1]), expected[:1], rtol=0, atol=1e-5)  # any batch size


def test_gsde_squashed_mean_is_exported(tmp_path):
    # use_sde=True, squash_output=True: predict's tanh of the mean, rescaled to the action space
    model = FederatedPPO("MlpPolicy", "Pendulum-v1", n_agents=2, n_envs_per_agent=2, n_steps=8, batch_size=8, seed=0,
                         use_sde=True, policy_kwargs={"net_arch": [16], "squash_output": True})  # fmt: skip
    with th.no_grad():
        model.policy.action_net.weight.mul_(300.0)  # saturated means for some observations
    obs = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    assert np.abs(expected).max() > 1.0  # rescaled from [-1, 1] to Pendulum's [-2, 2]
    np.testing.assert_allclose(_run(export_onnx(model, tmp_path / "p.onnx"), obs), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("space", ["MultiDiscrete", "MultiBinary", "Discrete"])
def test_other_spaces(tmp_path, space):
    from stable_baselines3.common.envs import IdentityEnv, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete

    maker = {"MultiDiscrete": IdentityEnvMultiDiscrete, "MultiBinary": IdentityEnvMultiBinary, "Discrete": IdentityEnv}[space]
    model = FederatedPG("MlpPolicy", make_federated_vec_env([lambda: maker(3)] * 2, n_envs_per_agent=1, seed=0), seed=0)
    obs = np.stack([model.observation_space.sample() for _ in range(8)]).astype(np.int64)  # Discrete observations too
    np.testing.assert_array_equal(
        _run(export_onnx(model, tmp_path / "p.onnx"), obs), model.predict(obs, deterministic=True)[0]
    )


def test_unsupported_spaces_are_named(tmp_path):
    import gymnasium as gym
    from stable_baselines3.common.envs import SimpleMultiObsEnv

    env = make_federated_vec_env(lambda: gym.wrappers.TimeLimit(SimpleMultiObsEnv(), 10), 2, 1, seed=0)
    model = FederatedPG("MultiInputPolicy", env, n_steps=4)
    with pytest.raises(NotImplementedError, match=r"observation space Dict.*FlattenObservation"):
        export_onnx(model, tmp_path / "p.onnx")
    with pytest.raises(TypeError, match=r"takes a model .* with an SB3 actor-critic policy"):
        export_onnx(object(), tmp_path / "p.onnx")

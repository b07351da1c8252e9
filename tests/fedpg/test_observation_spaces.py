"""
Image and Dict observations (``CnnPolicy``, ``MultiInputPolicy``) batched over agents, the SB3 way.

The central check: what a round trains on is what ``predict`` deploys — the batched actor's action
distribution on a rollout batch equals the SB3 policy's distribution on the raw observations of those
steps (images divided by 255 in both, channel order, frame stacks and dict keys handled alike).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.envs import BitFlippingEnv, SimpleMultiObsEnv
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecEnvWrapper, VecFrameStack
from torch import nn

from sb3_fedpg import FederatedPG, FederatedPPO, make_federated_vec_env
from sb3_fedpg.common.policies import FederatedActorCriticCnnPolicy, FederatedMultiInputActorCriticPolicy

PIXELS = "sb3_fedpg/HeteroPixelGrid-v0"


class TinyCNN(BaseFeaturesExtractor):
    """A custom features extractor (one strided convolution), as users pass through ``policy_kwargs``."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 16) -> None:
        super().__init__(observation_space, features_dim)
        channels, height, width = observation_space.shape
        self.net = nn.Sequential(
            nn.Conv2d(channels, 4, kernel_size=6, stride=6),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * (height // 6) * (width // 6), features_dim),
            nn.Tanh(),
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


class BatchNormCNN(TinyCNN):
    def __init__(self, observation_space: spaces.Box, features_dim: int = 16) -> None:
        super().__init__(observation_space, features_dim)
        self.net.insert(1, nn.BatchNorm2d(4))


class RecordObservations(VecEnvWrapper):
    """Keeps every observation the model was given (reset and steps), as the model received it."""

    def reset(self):
        obs = self.venv.reset()
        self.seen = [obs]
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.seen.append(obs)
        return obs, rewards, dones, infos


TINY = {"features_extractor_class": TinyCNN, "net_arch": [16]}


def pixel_env(n_agents=2, n_envs=2, seed=0):
    return make_federated_vec_env(PIXELS, n_agents, n_envs, seed=seed)


def dict_env(n_agents=2, n_envs=2, seed=0):
    return make_federated_vec_env(
        lambda: gym.wrappers.TimeLimit(SimpleMultiObsEnv(random_start=True), 10), n_agents, n_envs, seed=seed
    )


# (policy, env builder, policy_kwargs): every observation path the batched policy has
CASES = {
    "mlp-on-images": ("MlpPolicy", pixel_env, {"net_arch": [16]}),
    "cnn-nature": ("CnnPolicy", pixel_env, {"net_arch": [16]}),
    "cnn-custom-framestack": ("CnnPolicy", lambda: VecFrameStack(pixel_env(), 2), TINY),
    "multi-input": ("MultiInputPolicy", dict_env, {"net_arch": [16]}),
    "multi-input-framestack": ("MultiInputPolicy", lambda: VecFrameStack(dict_env(), 2), {"net_arch": [16]}),
}


def _model(algo, case, env=None, **kwargs):
    policy, make_env, policy_kwargs = CASES[case]
    extra = {"local_steps": 2} if algo is FederatedPG else {"batch_size": 8, "n_epochs": 2}
    env = env if env is not None else make_env()
    return algo(policy, env, n_steps=4, seed=0, policy_kwargs=policy_kwargs, **extra, **kwargs)


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
@pytest.mark.parametrize("case", list(CASES))
def test_the_trained_distribution_is_the_one_predict_uses(algo, case):
    model = _model(algo, case)
    model.learn(64)
    env = RecordObservations(model.env)
    model.set_env(env)
    n, m = model.n_agents, model.n_envs_per_agent
    theta = model.get_global_parameters().unsqueeze(0).repeat(n, 1)
    batch = model.collect_batch(theta, model._round_callback(None), reset=True)
    trained = model._actor.distribution(theta, batch.obs).probs  # (n, K*M, actions): what the round's gradients see
    with th.no_grad():
        policy = model.policy
        deployed = [policy.get_distribution(policy.obs_to_tensor(obs)[0]).distribution.probs for obs in env.seen[:-1]]
    deployed = th.stack(deployed).view(len(deployed), n, m, -1).transpose(0, 1).reshape(trained.shape)
    th.testing.assert_close(trained, deployed, atol=1e-5, rtol=1e-4)
    # the images really reached the policy divided by 255 (the bug was training on 0..255)
    if case != "multi-input" and not case.startswith("multi"):
        assert 0.99 < float(batch.obs.max()) <= 1.0


@pytest.mark.parametrize("case", ["cnn-nature", "multi-input"])
def test_each_agents_row_is_its_own_sb3_network(case, monkeypatch, request):
    """Different parameters per agent: distribution, gradient and critic of row i equal SB3's networks loaded with row i."""
    # On a GPU, cuDNN and cuBLAS may compute in TF32 (10-bit mantissa): float32 here, so float32's tolerances hold.
    # Only touched where CUDA exists: CPU builds of torch cannot restore cuda.matmul's flag (pytest >= 9 teardown).
    if th.cuda.is_available():
        monkeypatch.setattr(th.backends.cudnn, "allow_tf32", False)
        precision = th.get_float32_matmul_precision()
        th.set_float32_matmul_precision("highest")
        request.addfinalizer(lambda: th.set_float32_matmul_precision(precision))
    model = _model(FederatedPG, case)
    n = model.n_agents
    raw = model.env.reset()
    obs = model._obs_to_tensor(raw)  # (n, M, obs_dim)
    gen = th.Generator().manual_seed(1)
    theta = model.get_global_parameters()
    stacked = (theta + 0.05 * th.randn(n, theta.numel(), generator=gen).to(theta.device)).requires_grad_(True)
    dist = model._actor.distribution(stacked, obs)
    actions = dist.sample()
    (grads,) = th.autograd.grad(dist.log_prob(actions).sum(), stacked)
    critics = model.critics
    with th.no_grad():
        critics.params.add_(0.05 * th.randn(critics.params.shape, generator=gen).to(critics.params.device))
        values = critics(obs)
    m = model.n_envs_per_agent
    for i in range(n):
        rows = slice(i * m, (i + 1) * m)
        agent_obs = {k: v[rows] for k, v in raw.items()} if isinstance(raw, dict) else raw[rows]
        model._actor.set_vector(stacked[i].detach())
        policy_obs = model.policy.obs_to_tensor(agent_obs)[0]
        sb3_dist = model.policy.get_distribution(policy_obs)
        th.testing.assert_close(dist.probs[i].detach(), sb3_dist.distribution.probs, atol=1e-6, rtol=1e-5)
        model.policy.zero_grad()
        sb3_dist.log_prob(actions[i]).sum().backward()
        sb3_grad = th.cat([p.grad.flatten() for p in model._actor.parameters])
        th.testing.assert_close(grads[i], sb3_grad, atol=1e-5, rtol=1e-4)
        nn.utils.vector_to_parameters(critics.params[i].detach(), critics._net.parameters)
        with th.no_grad():
            # SB3's own value computation (the federated policy's predict_values refuses: no global critic)
            sb3_values = ActorCriticPolicy.predict_values(model.policy, policy_obs).squeeze(-1)
            th.testing.assert_close(values[i], sb3_values, atol=1e-5, rtol=1e-4)
    # the features extractor is part of the federated vector (and is not shared with the local critics)
    extractor_params = sum(p.numel() for p in model.policy.pi_features_extractor.parameters())
    assert extractor_params > 0 and model.n_federated_params > extractor_params
    assert model.policy.pi_features_extractor is not model.policy.vf_features_extractor


def test_a_custom_features_extractor_cannot_go_into_a_weights_file(tmp_path):
    model = _model(FederatedPG, "cnn-custom-framestack")
    with pytest.raises(ValueError, match=r"policy_kwargs\['features_extractor_class'\]=TinyCNN is a class"):
        model.save_weights(tmp_path / "w")
    assert not (tmp_path / "w.zip").exists()


def test_a_custom_features_extractor_is_honoured_and_trained():
    model = _model(FederatedPG, "cnn-custom-framestack")
    assert isinstance(model.policy.pi_features_extractor, TinyCNN)
    conv = model.policy.pi_features_extractor.net[0].weight
    before = conv.detach().clone()
    model.learn(64)
    assert not th.allclose(before, conv)  # the federated update reached the custom extractor


def test_cnn_policy_default_is_nature_cnn():
    model = FederatedPG("CnnPolicy", pixel_env(), n_steps=4)
    assert isinstance(model.policy.pi_features_extractor, NatureCNN)
    assert model.observation_space.shape == (1, 42, 42)  # channel-last env transposed as SB3 does


def test_a_cnn_with_batch_norm_trains_its_running_statistics():
    # BatchNorm2d inside a convolutional extractor: every agent's statistics move in its train-mode passes and the
    # policy's are their average after the round (the statistics' own tests: tests/common/test_batch_norm.py)
    model = FederatedPG("CnnPolicy", pixel_env(), n_steps=4, policy_kwargs={"features_extractor_class": BatchNormCNN})
    norm = model.policy.pi_features_extractor.net[1]
    before = norm.running_mean.clone()
    model.learn(model.steps_per_round)
    assert not th.allclose(before, norm.running_mean) and int(norm.num_batches_tracked) > 0


def test_nested_dict_observations_are_refused():
    class Nested(gym.Env):
        observation_space = spaces.Dict({"a": spaces.Dict({"b": spaces.Box(-1, 1, (2,))})})
        action_space = spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    with pytest.raises(NotImplementedError, match="Nested observation spaces are not supported"):
        FederatedPG("MultiInputPolicy", make_federated_vec_env(Nested, 1, 2))


def test_mlp_policy_on_dict_observations_names_multi_input_policy():
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        FederatedPG("MlpPolicy", dict_env())


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
@pytest.mark.parametrize("case", ["cnn-nature", "multi-input"])
def test_save_load_round_trip(tmp_path, algo, case):
    model = _model(algo, case)
    model.learn(64)
    obs = model.env.reset()
    expected, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=CASES[case][1]())
    actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    th.testing.assert_close(loaded.get_global_parameters(), model.get_global_parameters())
    th.testing.assert_close(loaded.critics.params, model.critics.params)
    loaded.learn(32)  # and it trains on
    # the pickle-free weights file: image and Dict spaces travel as JSON
    shared = algo.load_weights(model.save_weights(tmp_path / "weights"))
    assert shared.observation_space == model.observation_space
    np.testing.assert_array_equal(shared.predict(obs, deterministic=True)[0], expected)
    # the policy alone, as SB3 saves it
    model.policy.save(tmp_path / "policy.pth")
    policy_class = FederatedActorCriticCnnPolicy if case == "cnn-nature" else FederatedMultiInputActorCriticPolicy
    policy = policy_class.load(tmp_path / "policy.pth")
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], expected)


@pytest.mark.parametrize(
    "policy, env_fn",
    [
        ("CnnPolicy", pixel_env),
        ("MultiInputPolicy", dict_env),
        ("MultiInputPolicy", lambda: make_federated_vec_env(lambda: BitFlippingEnv(n_bits=4), 2, 2, seed=0)),
        ("MultiInputPolicy", lambda: make_federated_vec_env(lambda: BitFlippingEnv(n_bits=4, discrete_obs_space=True), 2, 2)),
    ],
)
def test_predict_shapes_single_and_batched(policy, env_fn):
    env = env_fn()
    model = FederatedPG(policy, env, n_steps=4, local_steps=2, policy_kwargs={"net_arch": [16]})
    model.learn(32)
    obs = env.reset()
    actions, state = model.predict(obs)
    assert actions.shape == (env.num_envs,) and state is None
    single = {k: v[0] for k, v in obs.items()} if isinstance(obs, dict) else obs[0]
    action, _ = model.predict(single, deterministic=True)
    assert np.shape(action) == () and env.action_space.contains(int(action))


def test_small_cnn_refuses_what_it_cannot_convolve():
    from sb3_fedpg.common.torch_layers import SmallCNN

    with pytest.raises(ValueError, match="3-D image observation space"):
        SmallCNN(spaces.Box(-1, 1, (4,)))
    with pytest.raises(ValueError, match="at least 7x7"):
        SmallCNN(spaces.Box(0, 255, (1, 5, 5), dtype=np.uint8))
    assert SmallCNN(spaces.Box(0, 255, (1, 42, 42), dtype=np.uint8))(th.zeros(2, 1, 42, 42)).shape == (2, 128)


def test_weights_files_describe_one_level_of_dict_only():
    from sb3_fedpg.common.persistence import WeightsFileError, _space_from_json

    box = {"type": "Box", "shape": [2], "dtype": "float32", "low": [0, 0], "high": [1, 1]}
    assert set(_space_from_json({"type": "Dict", "spaces": {"a": box}}, "observation_space").spaces) == {"a"}
    with pytest.raises(WeightsFileError, match=r"'type' must be 'Box'.*got 'Dict'"):
        _space_from_json({"type": "Dict", "spaces": {"a": {"type": "Dict", "spaces": {"b": box}}}}, "observation_space")
    with pytest.raises(WeightsFileError, match="'spaces' must be an object of 1 to"):
        _space_from_json({"type": "Dict", "spaces": {}}, "observation_space")

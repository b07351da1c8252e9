"""
Dropout follows SB3's train/eval convention (rollouts, behaviour log-probabilities and ``predict`` in eval mode,
the updates in train mode); layers with running statistics (batch norm) are refused with a clear error in the MLP
head (in a features extractor they are supported: tests/common/test_batch_norm.py).
"""

import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from sb3_fedpg import FederatedPG, FederatedPPO
from sb3_fedpg.common.policies import FederatedActorCriticPolicy


class DropoutPolicy(FederatedActorCriticPolicy):
    """The actor's hidden layer followed by dropout."""

    def _build_mlp_extractor(self) -> None:
        super()._build_mlp_extractor()
        self.mlp_extractor.policy_net.append(nn.Dropout(p=0.5))


def make_norm_policy(layer):
    class NormPolicy(FederatedActorCriticPolicy):
        def _build_mlp_extractor(self) -> None:
            super()._build_mlp_extractor()
            self.mlp_extractor.policy_net.append(layer)

    return NormPolicy


class RecordModes(BaseCallback):
    """At every env step: whether the actor's dropout is in train mode (it must not be, in rollouts)."""

    def __init__(self, dropout):
        super().__init__()
        self.dropout = dropout
        self.rollout_modes = []

    def _on_step(self) -> bool:
        self.rollout_modes.append(self.dropout.training)
        return True


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
@pytest.mark.parametrize("numpy_rollout", [True, False])
def test_dropout_is_off_in_rollouts_and_predict_and_on_in_updates(algo, numpy_rollout):
    # FederatedPPO without its correction: the surrogate correction's Fisher solve (a linear solve, not an update)
    # evaluates the scores in eval mode on purpose (a dropout mask per product would change the matrix in the solve)
    kwargs = {"correction": False} if algo is FederatedPPO else {}
    model = algo(DropoutPolicy, "CartPole-v1", n_agents=2, n_envs_per_agent=2, n_steps=8, seed=0, device="cpu", **kwargs)
    assert model._numpy_rollout  # dropout has a NumPy twin (the identity: rollouts run in eval mode)
    model._numpy_rollout = numpy_rollout  # the torch path: the hook below sees the rollouts' forward passes too
    dropout = model.policy.mlp_extractor.policy_net[-1]
    assert any(op is dropout for op in model._actor.net.mlp.ops)
    calls = []  # (training, grad enabled) at every forward through the batched actor's dropout
    dropout.register_forward_hook(lambda module, inputs, output: calls.append((module.training, th.is_grad_enabled())))
    recorder = RecordModes(dropout)
    model.learn(200, callback=recorder)
    assert recorder.rollout_modes and not any(recorder.rollout_modes)
    with_grad = [training for training, grad in calls if grad]
    no_grad = [training for training, grad in calls if not grad]
    assert with_grad and all(with_grad)  # every gradient comes from a train-mode forward pass
    assert not any(no_grad)  # sampling and behaviour log-probs: eval mode
    assert no_grad or (numpy_rollout and algo is FederatedPG)  # FederatedPG's only no-grad passes are rollouts
    # predict: eval mode, so deterministic actions are reproducible
    calls.clear()
    obs = model.env.reset()
    first, _ = model.predict(obs, deterministic=True)
    for _ in range(5):
        assert (model.predict(obs, deterministic=True)[0] == first).all()
    assert calls and not any(training for training, _ in calls)


def test_numpy_rollout_refuses_train_mode_dropout():
    model = FederatedPG(DropoutPolicy, "CartPole-v1", n_envs_per_agent=2, n_steps=8, seed=0, device="cpu")
    theta = model.get_global_parameters().unsqueeze(0).numpy()
    model.policy.set_training_mode(True)
    with pytest.raises(RuntimeError, match="eval mode"):
        model._actor.net.numpy_forward(theta, th.zeros(1, 2, 4).numpy())
    with model._actor.evaluation():
        assert model._actor.net.numpy_forward(theta, th.zeros(1, 2, 4).numpy()).shape == (1, 2, 2)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(64), nn.BatchNorm1d(64, affine=False)], ids=["affine", "stats-only"])
def test_batch_norm_is_refused_clearly(layer):
    with pytest.raises(NotImplementedError, match=r"BatchNorm1d keeps running statistics.*extractor only.*VecNormalize"):
        FederatedPG(make_norm_policy(layer), "CartPole-v1", n_steps=8)

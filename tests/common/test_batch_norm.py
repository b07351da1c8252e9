"""
Features extractors with buffers (batch norm's running statistics), the federated way: every agent moves its own
statistics with its own train-mode passes, rollouts and ``predict`` read them in eval mode, and at each round the
server averages the participants' statistics into the policy's (``fedmath.average_buffers``: the plain mean, see its
docstring), which ``predict`` and ``save``/``load`` then see.

The expected statistics are computed here from the batches the agents were given, not read from the library: batch
norm's update ``r ← (1 − m) r + m · stat(batch)`` with the mean and the unbiased variance of each agent's batch.
"""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM
from sb3_fedpg.common import fedmath
from sb3_fedpg.common.batched_policy import CUMULATIVE_BN_REFUSAL

ENV = "sb3_fedpg/HeteroCartPole-v0"


class FlattenBatchNormDropoutExtractor(BaseFeaturesExtractor):
    """SB3's extractor of ``tests/test_train_eval_mode.py``: flatten, batch norm, dropout."""

    def __init__(self, observation_space, momentum: float | None = 0.1):
        super().__init__(observation_space, get_flattened_obs_dim(observation_space))
        self.flatten = nn.Flatten()
        self.batch_norm = nn.BatchNorm1d(self._features_dim, momentum=momentum)
        self.dropout = nn.Dropout(0.5)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.dropout(self.batch_norm(self.flatten(observations)))


POLICY_KWARGS = {"net_arch": [16], "features_extractor_class": FlattenBatchNormDropoutExtractor}


def one_pass_per_batch(algo, n_agents=3, **kwargs):
    """
    A model whose round makes exactly one train-mode pass of each agent's actor over each batch it collects:
    FederatedPG with one local step reusing its one anchor batch, FederatedPPO with one epoch of one minibatch.
    """
    settings = {"n_agents": n_agents, "n_envs_per_agent": 2, "n_steps": 8, "seed": 0, "policy_kwargs": POLICY_KWARGS}
    if algo is FederatedPPO:
        settings.update(n_epochs=1, batch_size=16)
    else:
        settings.update(local_steps=1, anchor_batches=1, reuse_anchor_batch=True)
    return algo("MlpPolicy", ENV, **{**settings, **kwargs})


def record_batches(model, monkeypatch):
    """:return: the list every batch the model collects is appended to"""
    batches = []
    collect = model.collect_batch

    def spy(*args, **kwargs):
        batch = collect(*args, **kwargs)
        batches.append(batch)
        return batch

    monkeypatch.setattr(model, "collect_batch", spy)
    return batches


def expected_statistics(before: dict, batch_obs: th.Tensor, participants, momentum: float = 0.1) -> dict:
    """
    :param before: the global statistics at the start of the round
    :param batch_obs: the agents' batch ``(n, samples, obs_dim)`` (the features of Flatten: the observations)
    :param participants: the round's participants (``None``: all)
    :return: the mean over the participants of each agent's statistics after one batch-norm update on its batch
    """
    obs = batch_obs.double()
    mean = (1 - momentum) * before["running_mean"].double() + momentum * obs.mean(1)
    var = (1 - momentum) * before["running_var"].double() + momentum * obs.var(1, unbiased=True)
    rows = np.arange(obs.shape[0]) if participants is None else np.flatnonzero(participants.cpu().numpy())
    return {"running_mean": mean[rows].mean(0), "running_var": var[rows].mean(0)}


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
@pytest.mark.parametrize("participation", [1.0, 2 / 3])
def test_the_policy_statistics_are_the_average_of_the_agents(algo, participation, monkeypatch):
    model = one_pass_per_batch(algo, participation=participation)
    norm = model.policy.features_extractor.batch_norm
    before = {name: buffer.clone() for name, buffer in norm.named_buffers()}
    batches = record_batches(model, monkeypatch)
    model.learn(model.steps_per_round)
    assert len(batches) == 1  # one batch per agent in the round
    participants = model.last_round.participants
    assert (participants is None) == (participation == 1.0)
    expected = expected_statistics(before, batches[0].obs, participants)
    # the agents' batches differ (their own envs), so dropping or reweighting an agent changes the average
    assert not th.allclose(batches[0].obs[0].mean(0), batches[0].obs[1].mean(0))
    np.testing.assert_allclose(norm.running_mean.double(), expected["running_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.running_var.double(), expected["running_var"], rtol=1e-5, atol=1e-6)
    assert int(norm.num_batches_tracked) == 1
    assert model._actor.local_buffers() is None  # the agents' rows live for one round


def test_every_pass_of_a_round_moves_the_statistics_once_per_batch(monkeypatch):
    # FederatedPG with H = 3 local steps (the first reuses the anchor's batch): 3 train-mode passes per agent; the
    # anchor's half-batches (its noise) and the anchor's second part re-read a counted batch and must not count
    model = FederatedPG(
        "MlpPolicy",
        ENV,
        n_agents=2,
        n_envs_per_agent=2,
        n_steps=8,
        local_steps=3,
        anchor_batches=1,
        normalize_advantage="shared",
        ent_coef=0.01,
        seed=0,
        policy_kwargs=POLICY_KWARGS,
    )
    model.learn(model.steps_per_round)
    assert int(model.policy.features_extractor.batch_norm.num_batches_tracked) == 3


class RecordNormModes(BaseCallback):
    """At every env step: the actor's batch norm's mode (rollouts run in eval mode)."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm
        self.modes = []

    def _on_step(self) -> bool:
        self.modes.append(self.norm.training)
        return True


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO, FederatedSVRPGM])
def test_rollouts_and_predict_run_in_eval_mode_and_gradients_in_train_mode(algo):
    # FederatedPPO without its correction: the surrogate correction's Fisher solve evaluates the scores of the
    # behaviour policy in eval mode on purpose, with gradients (tests/common/test_train_eval_mode.py)
    kwargs = {"n_epochs": 2, "batch_size": 8, "correction": False} if algo is FederatedPPO else {"local_steps": 2}
    model = algo("MlpPolicy", ENV, n_agents=2, n_envs_per_agent=2, n_steps=8, seed=0, policy_kwargs=POLICY_KWARGS, **kwargs)
    norm = model.policy.features_extractor.batch_norm
    calls = []  # (training, grad enabled) at every pass through the actor's batch norm
    norm.register_forward_hook(lambda module, inputs, output: calls.append((module.training, th.is_grad_enabled())))
    recorder = RecordNormModes(norm)
    before = norm.running_mean.clone()
    model.learn(model.steps_per_round, callback=recorder)
    assert recorder.modes and not any(recorder.modes)  # rollouts: eval mode
    assert [training for training, grad in calls if grad] and all(training for training, grad in calls if grad)
    assert not any(training for training, grad in calls if not grad)  # sampling, behaviour log-probs: eval mode
    assert not th.allclose(before, norm.running_mean)  # the train-mode passes moved the statistics
    # predict: eval mode (dropout off, running statistics): deterministic actions repeat, the statistics stay
    after = {name: buffer.clone() for name, buffer in norm.named_buffers()}
    obs = model.env.reset()
    first, _ = model.predict(obs, deterministic=True)
    for _ in range(5):
        np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], first)
    for name, buffer in norm.named_buffers():
        assert th.equal(buffer, after[name])


def test_a_rollout_leaves_the_agents_statistics_alone():
    model = one_pass_per_batch(FederatedPG, n_agents=2)
    model._setup_learn(total_timesteps=1)
    model._actor.open_local_buffers(2)
    rows = model._actor.local_buffers()
    model.policy.set_training_mode(True)  # as during a round
    norm = model.policy.features_extractor.batch_norm
    rows["batch_norm.running_mean"].add_(th.tensor([[1.0], [-1.0]]))  # the agents' own statistics, apart
    snapshot = {name: value.clone() for name, value in rows.items()}
    params = model.get_global_parameters().unsqueeze(0).repeat(2, 1)
    model.sample_batch(params, model._round_callback(None))
    for name, value in rows.items():
        assert th.equal(value, snapshot[name])
    assert norm.training  # the policy's mode is restored after the rollout
    model._actor.close_local_buffers()


def test_the_critics_statistics_are_local_and_rolled_back_with_a_failed_round():
    model = one_pass_per_batch(FederatedPG, n_agents=2)
    critic_rows = model.critics.buffer_rows
    assert critic_rows is not None  # the critic's own extractor (share_features_extractor=False) has its statistics
    model.learn(model.steps_per_round)
    mean = critic_rows.rows()["batch_norm.running_mean"]
    assert not th.allclose(mean[0], mean[1])  # each agent's own, never averaged
    global_before = {n: b.clone() for n, b in model.policy.features_extractor.batch_norm.named_buffers()}
    critics_before = {n: b.clone() for n, b in critic_rows.rows().items()}

    class StopMidRound(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 5

    model.learn(model.steps_per_round, callback=StopMidRound(), reset_num_timesteps=False)
    for name, buffer in model.policy.features_extractor.batch_norm.named_buffers():
        assert th.equal(buffer, global_before[name])
    for name, value in critic_rows.rows().items():
        assert th.equal(value, critics_before[name])


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
def test_save_and_load_keep_the_statistics_exactly(algo, tmp_path):
    # SB3's zip (a custom extractor class is code, which a weights-only file refuses to describe)
    model = one_pass_per_batch(algo, n_agents=2)
    model.learn(2 * model.steps_per_round)
    path = tmp_path / "model"
    model.save(path)
    loaded = algo.load(path, env=model.get_env())
    for (name, saved), (_, restored) in zip(
        model.policy.features_extractor.batch_norm.named_buffers(),
        loaded.policy.features_extractor.batch_norm.named_buffers(),
        strict=True,
    ):
        assert restored.dtype == saved.dtype and th.equal(restored, saved), name
    for name, value in model.critics.buffer_rows.rows().items():
        assert th.equal(loaded.critics.buffer_rows.rows()[name], value), name
    obs = model.env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(loaded.steps_per_round)  # and trains on from them
    assert int(loaded.policy.features_extractor.batch_norm.num_batches_tracked) == 3


def test_federated_svrpgm_averages_its_agents_statistics(monkeypatch):
    model = FederatedSVRPGM(
        "MlpPolicy", ENV, n_agents=2, n_envs_per_agent=2, n_steps=8, local_steps=2, seed=0, policy_kwargs=POLICY_KWARGS
    )
    captured = []
    average = fedmath.average_buffers

    def spy(rows, participants=None):
        captured.append({name: value.clone() for name, value in rows.items()})
        return average(rows, participants)

    monkeypatch.setattr(fedmath, "average_buffers", spy)
    model.learn(2 * model.steps_per_round)
    norm = model.policy.features_extractor.batch_norm
    last = captured[-1]
    np.testing.assert_allclose(norm.running_mean, last["batch_norm.running_mean"].mean(0), rtol=1e-6)
    # 2 rounds of 2 local steps; the importance-weighted pass at θ̄_{r−1} re-reads each batch without counting it
    assert int(norm.num_batches_tracked) == 4


def test_cumulative_batch_norm_is_refused_clearly():
    class Cumulative(FlattenBatchNormDropoutExtractor):
        def __init__(self, observation_space):
            super().__init__(observation_space, momentum=None)

    with pytest.raises(NotImplementedError, match="momentum=None"):
        FederatedPG("MlpPolicy", ENV, n_agents=2, n_envs_per_agent=1, policy_kwargs={"features_extractor_class": Cumulative})
    assert "momentum" in CUMULATIVE_BN_REFUSAL

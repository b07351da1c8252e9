"""
Every ``fed/*`` metric of every federated algorithm, each checked on a case whose value is known.

The metrics come from the real algorithms through the SB3 logger (a recording output format), so a metric that is
computed right but logged wrong fails here too.
"""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import KVWriter, Logger

from sb3_fedpg import FederatedPG, FederatedPPO
from sb3_fedpg.common import fedmath
from sb3_fedpg.common.federated_vec_env import make_federated_vec_env
from sb3_fedpg.fedpg.learner import CorrectionStatistics
from sb3_fedpg.svrpgm import FederatedSVRPGM

ENV = "sb3_fedpg/HeteroCartPole-v0"
ALGOS = {"fedpg": FederatedPG, "fedppo": FederatedPPO, "fedsvrpgm": FederatedSVRPGM}
SMALL = {"policy_kwargs": {"net_arch": [8]}, "n_steps": 8, "n_envs_per_agent": 2}


class Recorder(KVWriter):
    """Keeps every logger dump (one per round)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def write(self, key_values, key_excluded, step: int = 0) -> None:
        self.rows.append({k: v for k, v in key_values.items() if isinstance(v, int | float)})

    def close(self) -> None:
        pass


def run(algo: str, rounds: int = 3, **kwargs) -> tuple[object, list[dict[str, float]]]:
    cls = ALGOS[algo]
    settings = {**SMALL, **({"batch_size": 8} if algo == "fedppo" else {}), **kwargs}
    env = settings.pop("env", ENV)
    model = cls("MlpPolicy", env, seed=0, **settings)
    recorder = Recorder()
    model.set_logger(Logger(None, [recorder]))
    rows = recorder.rows
    while len(rows) < rounds:  # one round at a time: the budget of a round differs between the algorithms
        model.learn(1, reset_num_timesteps=False)
    return model, rows[:rounds]


@pytest.mark.parametrize("algo", ALGOS)
def test_round_participants_and_bytes(algo):
    model, rows = run(algo, n_agents=3)
    n_params = model.n_federated_params
    assert [row["fed/round"] for row in rows] == [1, 2, 3]
    assert all(row["fed/participants"] == 3 for row in rows)
    # payloads: θ̄ (+ g) down and Δ_i (+ a_i) up per agent, float32
    for r, row in enumerate(rows):
        if algo == "fedsvrpgm":  # first round: anchors and g; then Δ_i up and θ̄_r, u_r, θ̄_{r−1} down
            up, down = (2, 2) if r == 0 else (1, 3)
        else:
            up = down = 2
        assert (row["fed/bytes_up"], row["fed/bytes_down"]) == (up * n_params * 3 * 4, down * n_params * 3 * 4)


@pytest.mark.parametrize("algo", ["fedpg", "fedppo"])
def test_partial_participation_counts_and_bytes(algo):
    model, rows = run(algo, n_agents=4, participation=0.5)
    assert all(row["fed/participants"] == 2 for row in rows)
    assert all(row["fed/bytes_up"] == 2 * model.n_federated_params * 2 * 4 for row in rows)


@pytest.mark.parametrize("correction", [True, False])
def test_drift_of_one_local_step_is_the_step_length(correction):
    # H = 1 from θ̄ with the anchor reused: every agent steps along g (corrected) or a_i (FedAvg), so the drift is
    # the learning rate times ‖g‖ — with correction exactly the logged policy-gradient norm
    _, rows = run("fedpg", n_agents=3, local_steps=1, variance_control="none", correction=correction, learning_rate=0.05)
    for row in rows:
        if correction:
            assert row["fed/drift"] == pytest.approx(0.05 * row["train/policy_gradient_norm"], rel=1e-5)
        else:  # the mean of ‖a_i‖ is at least ‖mean a_i‖ (triangle inequality), equal only for identical anchors
            assert row["fed/drift"] >= 0.05 * row["train/policy_gradient_norm"] * (1 - 1e-6)


@pytest.mark.parametrize("algo", ["fedpg", "fedppo"])
def test_one_agent_has_no_correction(algo):
    # g = a_1: the correction is exactly zero, with no signal and no noise; its SNR is 0 (not inf) and β = 0
    _, rows = run(algo, n_agents=1)
    for row in rows:
        assert row["fed/correction_norm"] == 0.0
        assert row["fed/correction_snr"] == 0.0
        assert row["fed/correction_beta"] == 0.0
        assert row["fed/anchor_noise"] > 0  # the anchor itself is still noisy


@pytest.mark.parametrize("algo", ["fedpg", "fedppo"])
def test_without_correction_no_correction_metric_is_logged(algo):
    # FedAvg: the anchors never leave the agents, so nothing about g − a_i can be known (or is measured)
    model, rows = run(algo, n_agents=3, correction=False)
    for row in rows:
        assert not {"fed/correction_norm", "fed/correction_snr", "fed/correction_beta", "fed/anchor_noise"} & set(row)
        assert row["fed/bytes_up"] == model.n_federated_params * 3 * 4


def test_momentum_norm_is_the_servers_momentum():
    # round r uses u_r, which round r − 1 logged as train/policy_gradient_norm (‖u_{r+1}‖ of that round)
    _, rows = run("fedsvrpgm", rounds=4, n_agents=2)
    for before, after in itertools.pairwise(rows):
        assert after["fed/momentum_norm"] == pytest.approx(before["train/policy_gradient_norm"], rel=1e-6)
    assert not {"fed/correction_norm", "fed/correction_snr"} & set(rows[1])


class ConstantReward(gym.Env):
    """Episodes of exactly ``length`` steps, reward ``value`` per step."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, value: float, length: int = 5) -> None:
        self.value, self.length, self.t = value, length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), self.value, False, self.t >= self.length, {}


@pytest.mark.parametrize("algo", ALGOS)
def test_each_agents_episode_return(algo):
    values = [1.0, -2.0, 0.5]
    env = make_federated_vec_env([lambda v=v: ConstantReward(v) for v in values], n_envs_per_agent=2, seed=0)
    _, rows = run(algo, env=env)
    for row in rows:
        for i, v in enumerate(values):
            assert row[f"fed/agent_{i}/ep_rew_mean"] == pytest.approx(5 * v)
        assert row["rollout/ep_rew_mean"] == pytest.approx(5 * np.mean(values))


def test_snr_regimes_with_known_values():
    a = th.tensor([[1.0, 0.0], [-1.0, 0.0]])  # two heterogeneous agents
    g = a.mean(0)
    # exact gradients (no noise) with heterogeneity: all signal
    snr = fedmath.correction_snr(a, g, th.zeros(2))
    assert th.isinf(snr).all() and fedmath.snr_damping(snr).tolist() == [1.0, 1.0]
    # exact gradients of identical agents, or one agent: no signal and no noise → 0, β = 0 (nothing to correct)
    same = th.ones(3, 2)
    assert fedmath.correction_snr(same, same.mean(0), th.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert fedmath.correction_snr(a[:1], a[0], th.tensor([0.3])).tolist() == [0.0]  # N = 1: noise (1 − 2 + 1) v = 0
    stats = CorrectionStatistics(1)
    assert stats.update(th.zeros(1), th.zeros(1)).tolist() == [0.0]
    # noisy: ‖g − a_i‖² = 1, noise (1 − 2/2) v + (v + v)/4 = v/2 → signal 1 − v/2, SNR (1 − v/2)/(v/2)
    v = th.tensor([0.4, 0.4])
    np.testing.assert_allclose(fedmath.correction_snr(a, g, v).numpy(), [(1 - 0.2) / 0.2] * 2, rtol=1e-6)
    assert fedmath.snr_from(np.array([0.0, 1.0, -1.0]), np.zeros(3)).tolist() == [0.0, math.inf, 0.0]


@pytest.mark.parametrize("k", [2, 4])
def test_anchor_noise_of_k_sub_batches_is_unbiased(k):
    # k = 2 is the single anchor batch split in halves; the anchor is the mean of its k parts
    rng = np.random.default_rng(1)
    sigma, p = 0.5, 10
    draws = rng.normal(size=(20_000, k, 3, p)) * sigma
    v = np.mean([fedmath.anchor_noise_variance(d) for d in draws], axis=0)
    np.testing.assert_allclose(v, p * sigma**2 / k, rtol=0.03)

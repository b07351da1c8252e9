"""
A round commits all local state or none: θ̄, critics, the critics' Adam state, the local Adam moments and
``num_timesteps`` are exactly their pre-round values after a round that fails half-way (a callback that stops it
leaves ``num_timesteps`` counting the steps run, as in SB3).
"""

import copy

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_fedpg import FederatedPG, make_federated_vec_env

N_STEPS, LOCAL_STEPS = 8, 2
ROUND_STEPS = N_STEPS * LOCAL_STEPS  # vector steps per round (the anchor batch is reused for the first local step)
FAIL_AT = N_STEPS + 4  # mid-round: after the anchor batch's critic update and the first local (Adam) update


def _state(model):
    return copy.deepcopy(
        {
            "theta": model.get_global_parameters(),
            "critics": model.critics.state_dict(),
            "critic_optimizer": model.critic_optimizer.state_dict(),
            "local_optimizer": model.local_optimizer_state.state_dict(),
            "num_timesteps": model.num_timesteps,
            "rounds": model._n_rounds,
            "updates": model._n_updates,
        }
    )


def _assert_same(a, b, where="state"):
    assert type(a) is type(b), where
    if th.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape and th.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


class _Fault:
    """Agent 1's reward: normal until armed, then after ``at`` more vector steps it misbehaves."""

    def __init__(self, kind):
        self.kind, self.armed, self.count, self.at = kind, False, 0, FAIL_AT

    def __call__(self, obs, action, next_obs, reward):
        if not self.armed:
            return reward
        self.count += 1
        if self.count <= self.at:
            return reward
        if self.kind == "raise":
            raise RuntimeError("sensor failure in agent 1's env")
        if self.kind == "nan":
            return np.full(len(obs), np.nan)
        if self.kind == "huge":  # ×1e30: finite, but its square overflows the critic's Adam second moment
            return reward * np.float32(1e30)
        if self.kind == "float64_overflow":  # finite as float64, inf as float32
            return np.full(len(obs), 1e300, dtype=np.float64)
        return reward


class _StopMidRound(BaseCallback):
    def __init__(self, model_state_before):
        super().__init__()
        self.before, self.armed, self.count, self.local_state_changed = model_state_before, False, 0, False

    def _on_step(self):
        if not self.armed:
            return True
        self.count += 1
        if self.count < FAIL_AT:
            return True
        # The round in flight has already moved the local state: the rollback has something to undo.
        now = self.model.critics.state_dict()["params"]
        self.local_state_changed = not th.equal(now, self.before()["critics"]["params"])
        return False


def _model(fault, first_round_ok=True):
    ok = lambda obs, action, next_obs, reward: reward
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2, reward_fns=[ok, fault, ok], seed=0)
    model = FederatedPG(
        "MlpPolicy", env, n_steps=N_STEPS, local_steps=LOCAL_STEPS, local_optimizer="adam", estimator="gae", seed=0
    )
    if first_round_ok:
        model.learn(ROUND_STEPS * env.num_envs)  # one good round: Adam states are non-empty
        assert model._n_rounds == 1
    return model


@pytest.mark.parametrize("first_round_ok", [True, False])
@pytest.mark.parametrize(
    "kind, error, message",
    [
        ("raise", RuntimeError, "sensor failure"),
        ("nan", ValueError, r"non-finite reward \(NaN or inf\) for agent\(s\) \[1\]"),
        ("huge", FloatingPointError, r"non-finite local state .* agent\(s\) \[1\] .*critic optimiser exp_avg_sq"),
        ("float64_overflow", ValueError, r"agent\(s\) \[1\] \(finite before the conversion to float32"),
    ],
)
def test_a_failing_round_rolls_back_every_local_state(kind, error, message, first_round_ok):
    fault = _Fault(kind)
    model = _model(fault, first_round_ok)
    before = _state(model)
    fault.armed = True
    with pytest.raises(error, match=message):
        model.learn(10 * ROUND_STEPS * model.n_envs, reset_num_timesteps=False)
    assert fault.count > fault.at  # it did fail mid-round
    _assert_same(_state(model), before)


def test_a_callback_stopping_mid_round_rolls_back_every_local_state():
    model = _model(_Fault("none"))
    callback = _StopMidRound(lambda: before)
    before = _state(model)
    callback.armed = True
    model.learn(10 * ROUND_STEPS * model.n_envs, callback=callback, reset_num_timesteps=False)
    assert callback.count == FAIL_AT and callback.local_state_changed
    # the steps run stay counted (SB3's num_timesteps, what the callbacks saw); everything else is rolled back
    assert model.num_timesteps == callback.num_timesteps == before["num_timesteps"] + FAIL_AT * model.n_envs
    _assert_same({**_state(model), "num_timesteps": before["num_timesteps"]}, before)


def test_after_a_rolled_back_critic_overflow_the_critic_learns_again():
    fault = _Fault("huge")
    model = _model(fault)
    fault.armed = True
    with pytest.raises(FloatingPointError, match=r"agent\(s\) \[1\]"):
        model.learn(10 * ROUND_STEPS * model.n_envs, reset_num_timesteps=False)
    fault.armed = False  # the spike is over
    critic_before = model.critics.params.detach().clone()
    model.learn(2 * ROUND_STEPS * model.n_envs, reset_num_timesteps=False)
    assert model.learner.nonfinite_local_state() == {}
    for state in model.critic_optimizer.state.values():
        assert th.isfinite(state["exp_avg_sq"]).all()
    assert not th.equal(model.critics.params[1], critic_before[1])  # agent 1's critic still learns


def test_nonfinite_local_state_names_agents_and_parts():
    model = _model(_Fault("none"))
    assert model.learner.nonfinite_local_state() == {}
    model.local_optimizer_state.exp_avg_sq[2, 0] = float("inf")
    with th.no_grad():
        model.critics.params[0, 3] = float("nan")
    assert model.learner.nonfinite_local_state() == {
        0: ["critic parameters"],
        2: ["local optimiser exp_avg_sq"],
    }
    with pytest.raises(FloatingPointError, match=r"agent\(s\) \[0, 2\] \(agent 0: critic parameters; agent 2: local"):
        model.learner.check_local_state()


def test_snapshot_clones_every_tensor_and_keeps_the_structure():
    import collections

    import torch as th

    from sb3_fedpg.common.federated_algorithm import snapshot

    Pair = collections.namedtuple("Pair", "a b")
    state = collections.OrderedDict(w=th.ones(2), groups=[{"lr": 0.1, "betas": (0.9, 0.99)}], pair=Pair(th.zeros(1), 3))
    state._metadata = {"": {"version": 2}}
    copied = snapshot(state)
    state["w"].add_(1.0)
    state["pair"].a.add_(5.0)
    assert copied["w"].tolist() == [1.0, 1.0] and copied["pair"].a.tolist() == [0.0] and copied["pair"].b == 3
    assert type(copied) is collections.OrderedDict and copied._metadata == {"": {"version": 2}}
    assert copied["groups"] == [{"lr": 0.1, "betas": (0.9, 0.99)}] and copied["groups"] is not state["groups"]

"""
FederatedPG with ``policy_kwargs['optimizer_class']``: any torch optimiser as every agent's local optimiser, on its
actor row along the corrected direction and on its critic (issue 27).
"""

import copy

import pytest
import torch as th

from sb3_fedpg import FederatedPG
from sb3_fedpg.common.safe_format import UnsafeToSaveError
from sb3_fedpg.common.torch_optimizer import StackedParameterOptimizer
from sb3_fedpg.fedpg.local_optim import TorchLocalOptimizer


def torch_optimizer(optimizer_class, **kwargs):
    return {"net_arch": [8], "optimizer_class": optimizer_class, "optimizer_kwargs": kwargs}


def assert_same_state(a, b):
    """Two (nested) state dicts hold the same values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    elif th.is_tensor(a):
        assert th.equal(a, b)
    else:
        assert a == b


def test_torch_adam_is_the_built_in_local_adam(tiny_model):
    # LocalAdam's betas and eps, and the critics' th.optim.Adam defaults: the same steps, to float rounding
    kwargs = dict(n_agents=3, local_steps=3, learning_rate=0.01)
    built_in = tiny_model(local_optimizer="adam", **kwargs)
    built_in.learn(2 * built_in.steps_per_round)
    ours = tiny_model(policy_kwargs=torch_optimizer(th.optim.Adam, betas=(0.9, 0.999), eps=1e-8), **kwargs)
    assert isinstance(ours.local_optimizer_state, TorchLocalOptimizer)
    assert isinstance(ours.critic_optimizer, StackedParameterOptimizer)
    ours.learn(2 * ours.steps_per_round)
    th.testing.assert_close(ours.get_global_parameters(), built_in.get_global_parameters(), rtol=0, atol=1e-6)
    th.testing.assert_close(ours.critics.params, built_in.critics.params, rtol=0, atol=1e-6)
    adam = built_in.local_optimizer_state
    critic_adam = next(iter(built_in.critic_optimizer.state.values()))
    for i in range(3):
        actor = ours.local_optimizer_state.optimizer.state[ours.local_optimizer_state.leaves[i]]
        critic = ours.critic_optimizer.optimizer.state[ours.critic_optimizer.leaves[i]]
        assert float(actor["step"]) == int(adam.step_count) == 2 * 3
        # torch's first moment is of the loss gradient −d_i, LocalAdam's of the ascent direction d_i
        th.testing.assert_close(actor["exp_avg"], -adam.exp_avg[i], rtol=1e-5, atol=1e-7)
        th.testing.assert_close(actor["exp_avg_sq"], adam.exp_avg_sq[i], rtol=1e-5, atol=1e-7)
        for key in ("exp_avg", "exp_avg_sq"):
            th.testing.assert_close(critic[key], critic_adam[key][i], rtol=1e-5, atol=1e-7)


def record_directions(model, monkeypatch):
    """Every local step's (learning rate, corrected directions) handed to the agents' optimisers."""
    rule, recorded = model.local_optimizer_state, []
    make_update = rule.make_update

    def recording(learning_rate, max_grad_norm=None):
        update = make_update(learning_rate, max_grad_norm)

        def step(params, direction, i):
            recorded.append((learning_rate, direction.detach().clone()))
            return update(params, direction, i)

        return step

    monkeypatch.setattr(rule, "make_update", recording)
    return recorded


def test_each_agent_steps_its_own_torch_optimiser(tiny_model, monkeypatch):
    # SGD with momentum: after every round, agent i's row is what its own th.optim.SGD gives, from θ̄ along its own
    # ascent directions, its momentum carried over from the previous round
    n = 3
    sgd = torch_optimizer(th.optim.SGD, momentum=0.9)
    model = tiny_model(n_agents=n, local_steps=3, learning_rate=0.05, policy_kwargs=sgd)
    recorded = record_directions(model, monkeypatch)
    rows = [th.zeros(model.n_federated_params) for _ in range(n)]
    singles = [th.optim.SGD([row], lr=1.0, momentum=0.9) for row in rows]
    for _ in range(2):
        theta_bar = model.get_global_parameters().clone()
        recorded.clear()
        model.learn(model.steps_per_round, reset_num_timesteps=False)
        assert len(recorded) == 3
        for row in rows:
            row.data.copy_(theta_bar)
        for learning_rate, direction in recorded:
            for i, single in enumerate(singles):
                single.param_groups[0]["lr"] = learning_rate
                rows[i].grad = -direction[i]  # torch minimises: the agent ascends its corrected direction
                single.step()
        th.testing.assert_close(model.last_round.local_params, th.stack(rows), rtol=0, atol=1e-6)
    assert not th.equal(rows[0], rows[1])  # the agents' directions differ (heterogeneous rewards)


def test_local_optimizer_and_optimizer_class_together_are_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"local_optimizer='adam' and policy_kwargs\['optimizer_class'\] both set"):
        tiny_model(local_optimizer="adam", policy_kwargs=torch_optimizer(th.optim.SGD))
    tiny_model(policy_kwargs=torch_optimizer(th.optim.SGD)).save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="both set"):
        FederatedPG.load(tmp_path / "m.zip", local_optimizer="adam")


def test_default_path_is_untouched(tiny_model):
    model = tiny_model(policy_kwargs={"net_arch": [8], "optimizer_kwargs": None})  # nothing asked: the built-in rule
    assert type(model.critic_optimizer) is th.optim.Adam
    assert not isinstance(model.local_optimizer_state, TorchLocalOptimizer)


def test_checkpoint_resumes_the_optimiser_state_exactly(tiny_model, tmp_path):
    model = tiny_model(n_agents=3, learning_rate=0.02, policy_kwargs=torch_optimizer(th.optim.RMSprop, momentum=0.5))
    model.learn(2 * model.steps_per_round)
    model.save_checkpoint(tmp_path / "ckpt.zip")
    model.learn(2 * model.steps_per_round, reset_num_timesteps=False)
    resumed = FederatedPG.load_checkpoint(tmp_path / "ckpt.zip")
    assert isinstance(resumed.local_optimizer_state, TorchLocalOptimizer)
    assert type(resumed.local_optimizer_state.optimizer) is th.optim.RMSprop
    resumed.learn(2 * resumed.steps_per_round, reset_num_timesteps=False)
    assert th.equal(resumed.get_global_parameters(), model.get_global_parameters())
    assert_same_state(resumed.local_state_dict(), model.local_state_dict())


@pytest.mark.parametrize("file_format", ["sb3", "safetensors"])
def test_save_and_load_keep_the_optimiser_state(tiny_model, tmp_path, file_format):
    policy_kwargs = torch_optimizer(th.optim.Adam, betas=(0.8, 0.99), eps=1e-6)
    model = tiny_model(policy_kwargs=policy_kwargs)
    model.learn(2 * model.steps_per_round)
    model.save(tmp_path / "m.zip", format=file_format)
    loaded = FederatedPG.load(tmp_path / "m.zip")
    assert loaded.policy_kwargs == policy_kwargs  # the betas come back a tuple from JSON too
    assert_same_state(loaded.local_state_dict(), model.local_state_dict())
    group = loaded.local_optimizer_state.optimizer.param_groups[0]
    assert (type(loaded.local_optimizer_state.optimizer), group["betas"], group["eps"]) == (th.optim.Adam, (0.8, 0.99), 1e-6)


def test_weights_file_refuses_an_optimiser_it_cannot_name(tiny_model, tmp_path):
    class MyAdam(th.optim.Adam):
        pass

    model = tiny_model(policy_kwargs=torch_optimizer(MyAdam))
    with pytest.raises(UnsafeToSaveError, match=r"policy_kwargs\['optimizer_class'\].*MyAdam.*is not one of"):
        model.save(tmp_path / "m.zip", format="safetensors")
    assert not (tmp_path / "m.zip").exists()
    model.save(tmp_path / "m.zip")  # an SB3 zip pickles the class
    assert FederatedPG.load(tmp_path / "m.zip").policy_kwargs["optimizer_class"] is MyAdam


def test_a_failed_round_rolls_the_optimiser_state_back(tiny_model):
    from stable_baselines3.common.callbacks import BaseCallback

    class StopMidRound(BaseCallback):  # in the second round's last batch: after local steps (and critic steps)
        def _on_step(self):
            return self.num_timesteps < self.model.steps_per_round * 7 // 4

    model = tiny_model(policy_kwargs=torch_optimizer(th.optim.SGD, momentum=0.9))
    model.learn(model.steps_per_round)
    before = copy.deepcopy(model.local_state_dict())
    model.learn(model.steps_per_round, callback=StopMidRound(), reset_num_timesteps=False)
    assert model._n_rounds == 1
    assert_same_state(model.local_state_dict(), before)

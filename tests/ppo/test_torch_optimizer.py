"""
FederatedPPO with ``policy_kwargs['optimizer_class']``: any torch optimiser as every agent's local optimiser, on its
actor row and its critic with ``learning_rate`` (SB3's one optimiser over actor and critic), an agent stopped by its
KL early stop keeping its parameters and its state (issue 27).
"""

import pytest
import torch as th

from sb3_fedpg import FederatedPPO
from sb3_fedpg.common.torch_optimizer import AgentOptimizer
from sb3_fedpg.ppo.local_solver import BatchedAdam

#: a step size and KL target at which the three agents stop their epochs at different minibatches
EARLY_STOPS = dict(n_agents=3, n_steps=16, n_epochs=4, learning_rate=0.03, target_kl=0.002)


def torch_optimizer(optimizer_class, **kwargs):
    return {"net_arch": [8], "optimizer_class": optimizer_class, "optimizer_kwargs": kwargs}


def test_torch_adam_is_the_built_in_batched_adam_with_early_stops(tiny_model):
    # one model after the other: the minibatches are drawn from torch's global generator, seeded by each constructor
    built_in = tiny_model(FederatedPPO, **EARLY_STOPS)
    built_in.learn(3 * built_in.steps_per_round)
    ours = tiny_model(FederatedPPO, policy_kwargs=torch_optimizer(th.optim.Adam, betas=(0.9, 0.999), eps=1e-8), **EARLY_STOPS)
    assert isinstance(ours.actor_optimizer, AgentOptimizer) and isinstance(ours.critic_optimizer, AgentOptimizer)
    ours.learn(3 * ours.steps_per_round)
    steps = built_in.actor_optimizer.steps
    assert len(set(steps.tolist())) == 3, "the agents should stop at different steps"
    th.testing.assert_close(ours.get_global_parameters(), built_in.get_global_parameters(), rtol=0, atol=1e-6)
    th.testing.assert_close(ours.critics.params, built_in.critics.params, rtol=0, atol=1e-6)
    for name in ("actor_optimizer", "critic_optimizer"):
        adam, rows = getattr(built_in, name), getattr(ours, name)
        for i in range(3):
            state = rows.optimizer.state[rows.leaves[i]]
            assert float(state["step"]) == float(adam.steps[i])  # each agent's own step count
            th.testing.assert_close(state["exp_avg"], adam.exp_avg[i], rtol=1e-5, atol=1e-7)
            th.testing.assert_close(state["exp_avg_sq"], adam.exp_avg_sq[i], rtol=1e-5, atol=1e-7)


def test_each_agent_steps_its_own_torch_optimiser(tiny_model, monkeypatch):
    # SGD with momentum and early stops: agent i's actor row after a round is its own th.optim.SGD's, stepped only on
    # the minibatches it took, from θ̄, its momentum carried over rounds
    model = tiny_model(FederatedPPO, policy_kwargs=torch_optimizer(th.optim.SGD, momentum=0.9), **EARLY_STOPS)
    rule, recorded = model.actor_optimizer, []
    step_ = rule.step_

    def recording(params, grad, learning_rate, agents=None):
        recorded.append((learning_rate, grad.clone(), list(range(3)) if agents is None else list(agents)))
        step_(params, grad, learning_rate, agents)

    monkeypatch.setattr(rule, "step_", recording)
    rows = [th.zeros(model.n_federated_params) for _ in range(3)]
    singles = [th.optim.SGD([row], lr=1.0, momentum=0.9) for row in rows]
    skipped = 0
    for _ in range(2):
        theta_bar = model.get_global_parameters().clone()
        recorded.clear()
        model.learn(model.steps_per_round, reset_num_timesteps=False)
        for row in rows:
            row.data.copy_(theta_bar)
        for learning_rate, grad, agents in recorded:
            skipped += 3 - len(agents)
            for i in agents:
                singles[i].param_groups[0]["lr"] = learning_rate
                rows[i].grad = grad[i]
                singles[i].step()
        th.testing.assert_close(model.last_round.local_params, th.stack(rows), rtol=0, atol=1e-6)
    assert skipped > 0, "some agent should have been left out of a step"


def test_checkpoint_resumes_the_optimiser_state_exactly(tiny_model, tmp_path):
    model = tiny_model(FederatedPPO, policy_kwargs=torch_optimizer(th.optim.RMSprop, momentum=0.5), **EARLY_STOPS)
    model.learn(2 * model.steps_per_round)
    model.save_checkpoint(tmp_path / "ckpt.zip")
    model.learn(2 * model.steps_per_round, reset_num_timesteps=False)
    resumed = FederatedPPO.load_checkpoint(tmp_path / "ckpt.zip")
    assert type(resumed.actor_optimizer.optimizer) is th.optim.RMSprop
    resumed.learn(2 * resumed.steps_per_round, reset_num_timesteps=False)
    assert th.equal(resumed.get_global_parameters(), model.get_global_parameters())
    assert th.equal(resumed.critics.params, model.critics.params)


@pytest.mark.parametrize("file_format", ["sb3", "safetensors"])
def test_save_and_load_keep_the_optimiser_state(tiny_model, tmp_path, file_format):
    model = tiny_model(FederatedPPO, policy_kwargs=torch_optimizer(th.optim.SGD, momentum=0.9, nesterov=True))
    model.learn(model.steps_per_round)
    model.save(tmp_path / "m.zip", format=file_format)
    loaded = FederatedPPO.load(tmp_path / "m.zip")
    for name in ("actor_optimizer", "critic_optimizer"):
        ours, theirs = getattr(loaded, name), getattr(model, name)
        assert ours.optimizer.param_groups[0]["nesterov"]
        assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]
        for mine, original in zip(ours.leaves, theirs.leaves, strict=True):
            buffers = ours.optimizer.state[mine]["momentum_buffer"], theirs.optimizer.state[original]["momentum_buffer"]
            assert th.equal(*buffers)


def test_default_path_keeps_the_batched_adam(tiny_model):
    model = tiny_model(FederatedPPO)
    assert isinstance(model.actor_optimizer, BatchedAdam) and isinstance(model.critic_optimizer, BatchedAdam)

"""The agent's memory travels as an ArrayRecord (named arrays + a JSON skeleton), bit for bit; one function per phase."""

import numpy as np
import pytest
import torch as th
from flwr.app import Context, RecordDict

from sb3_fedpg.common import fedmath
from sb3_fedpg.flower import agent as agent_module
from sb3_fedpg.flower.agent import NeuralAgent, flatten_state, unflatten_state
from sb3_fedpg.flower.client_app import ContextMemory
from sb3_fedpg.flower.config import parse_run_config
from sb3_fedpg.flower.phases import InProcessMemory, PhaseRequest, answer
from sb3_fedpg.flower.server_app import server_anchors

TINY = {"n-envs-per-agent": 2, "n-steps": 8, "local-steps": 2, "net-arch": "8", "local-optimizer": "adam"}
#: FederatedPPO agents: phase 2 runs PPO epochs on the rollout of phase 1, which must travel in the agent's memory
TINY_PPO = {
    **TINY,
    "algorithm": "fedppo",
    "ppo-n-steps": 8,
    "ppo-batch-size": 4,
    "ppo-n-epochs": 2,
    "ppo-correction": True,
    "ppo-learning-rate": 1e-2,
}


def test_flatten_round_trip_keeps_types_and_bits():
    state = {
        "net": {"w": th.randn(3, 2), "step": th.tensor(4.0)},
        "opt": {"state": {0: {"exp_avg": th.randn(5).double()}}, "param_groups": [{"betas": (0.9, 0.999), "params": [0]}]},
        "flag": None,
    }
    arrays, skeleton = flatten_state(state)
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    back = unflatten_state(arrays, skeleton, to_tensor=th.from_numpy)
    assert list(back["opt"]["state"]) == [0]  # int keys stay int
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["flag"] is None
    assert th.equal(back["net"]["w"], state["net"]["w"]) and back["opt"]["state"][0]["exp_avg"].dtype == th.float64
    with pytest.raises(TypeError, match="cannot flatten object"):
        flatten_state({"x": object()})


def _request(phase, server_round, params, global_grad=None, run_id=7, run_config=TINY, scale=None):
    if run_id in (101, 103):  # the ClientApp path: a fresh process (and agent object) for every message
        for key in [k for k in agent_module._AGENT_CACHE if k[0] == run_id]:
            del agent_module._AGENT_CACHE[key]
    return PhaseRequest(phase, run_id, run_config, 1, 2, server_round, params, global_grad, scale)


def _server(run_config, params, reply, metrics):
    # what the server makes of one agent's anchor reply: its anchor (assembled with the shared advantage scale)
    (anchor,), scale = server_anchors(parse_run_config(run_config), params.size, [reply], [metrics])
    return anchor, scale


@pytest.mark.parametrize("run_config", [TINY, TINY_PPO], ids=["fedpg", "fedppo"])
def test_context_state_and_worker_memory_give_the_same_replies(run_config):
    # A ClientApp that keeps the agent's memory in context.state (rebuilt from arrays every message) and a worker that
    # keeps the agent object must compute the same bits: that is what makes simulation == deployment.
    ppo = run_config is TINY_PPO
    params = NeuralAgent(parse_run_config(run_config), 1, 2).initial_params()
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    via_context, via_worker = ContextMemory(context), InProcessMemory()
    fresh, kept = (103, 203) if ppo else (101, 202)
    for server_round in (1, 2):
        replies = []
        for run_id, memory in ((fresh, via_context), (kept, via_worker)):
            reply, metrics = answer(_request("grad", server_round, params, run_id=run_id, run_config=run_config), memory)
            anchor, scale = _server(run_config, params, reply, metrics)
            request = _request("local", server_round, params, anchor, run_id=run_id, run_config=run_config, scale=scale)
            delta, local_metrics = answer(request, memory)
            replies.append((anchor, delta, metrics, local_metrics))
        (a1, d1, m1, l1), (a2, d2, m2, l2) = replies
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(d1, d2)
        assert np.abs(d1).max() > 0
        assert m1["num-examples"] == m2["num-examples"] == 16 and m1["agent"] == 1
        # FederatedPPO's local round steps on the phase-1 rollout (no new env steps): its size is the reply's examples
        assert l1["num-examples"] == l2["num-examples"] == 16
        params = params + d1
    assert "fedpg-agent" in context.state.array_records  # the critic and Adam moments are arrays there
    arrays = context.state.array_records["fedpg-agent"]
    assert len(arrays) > 3
    # the rollout travels with the memory only where phase 2 needs it; the anchor's advantage moments always (the
    # local steps bring their batches to the server's scale with them)
    assert any(".round.obs" in name for name in arrays) == ppo
    assert any(".round.advantage_moments" in name for name in arrays)


@pytest.mark.parametrize("correction", [True, "surrogate", "surrogate+snr_damping"])
def test_fedppo_agent_runs_the_ppo_epochs_of_the_in_process_algorithm(correction):
    # One FederatedPPO agent on Flower's phases computes what FederatedPPO's own solver computes on that agent's env.
    from sb3_fedpg.flower.agent import make_agent_model, message_seed

    correction, _, variance_control = str(correction).partition("+") if correction is not True else (True, "", "")
    run_config = {**TINY_PPO, "ppo-correction": correction, "ppo-variance-control": variance_control or "none"}
    config = parse_run_config(run_config)
    params = NeuralAgent(config, 1, 2).initial_params()
    memory = InProcessMemory()
    reply, metrics = answer(_request("grad", 1, params, run_id=401, run_config=run_config), memory)
    anchor, scale = _server(run_config, params, reply, metrics)
    g = anchor * 0.5
    delta, _ = answer(_request("local", 1, params, g, run_id=401, run_config=run_config, scale=scale), memory)

    model = make_agent_model(config, 1, 2)
    model._setup_learn(total_timesteps=1, callback=None)
    model.seed_streams(message_seed(config, 1, 1, 1))
    model.start_fresh_episodes()
    from stable_baselines3.common.callbacks import CallbackList

    callback = CallbackList([])
    callback.init_callback(model)
    solver = model.local_solver(callback, config.ppo_learning_rate)
    assert solver.settings.correction == ("linear" if correction is True else correction)
    assert solver.settings.variance_control == (variance_control or "none")
    theta = th.as_tensor(params)
    expected_anchor, expected_scale = fedmath.solver_anchors(solver, theta, 1)
    assert scale == expected_scale
    np.testing.assert_array_equal(anchor, expected_anchor[0].numpy())
    model.seed_streams(message_seed(config, 1, 1, 2))  # phase 2's minibatch order comes from its own message seed
    local = solver.local_round(theta, expected_anchor, th.as_tensor(g))
    np.testing.assert_allclose(delta, (local[0] - theta).numpy(), rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="local_round before anchor"):
        model.local_solver(callback, 1e-3).local_round(theta, expected_anchor, th.as_tensor(g))


def test_fedppo_run_config_keys_are_validated():
    with pytest.raises(ValueError, match="ppo-batch-size"):
        parse_run_config({"algorithm": "fedppo", "ppo-batch-size": 0})
    with pytest.raises(ValueError, match="algorithm"):
        parse_run_config({"algorithm": "ppo"})
    with pytest.raises(ValueError, match="tabular"):
        parse_run_config({"algorithm": "fedppo", "task": "tabular"})
    config = parse_run_config({"algorithm": "fedppo", "ppo-target-kl": 0.0, "ppo-max-grad-norm": 0.0})
    assert config.ppo_target_kl is None and config.ppo_max_grad_norm is None and config.agent_learning_rate == 3e-4


def test_phase_two_without_an_anchor_is_refused():
    params = np.zeros(4 * 8 + 8 + 8 * 2 + 2, dtype=np.float32)
    with pytest.raises(RuntimeError, match="missed phase 1 of round 3"):
        answer(_request("local", 3, params, params), InProcessMemory())
    with pytest.raises(ValueError, match="unknown phase"):
        answer(_request("train", 1, params), InProcessMemory())


def test_evaluation_reports_the_return_and_leaves_training_untouched():
    params = NeuralAgent(parse_run_config(TINY), 1, 2).initial_params()
    plain, evaluated = InProcessMemory(), InProcessMemory()
    anchor, _ = answer(_request("grad", 1, params, run_id=301), plain)
    _, metrics = answer(_request("evaluate", 1, params, run_id=302), evaluated)
    assert np.isfinite(metrics["eval_return"]) and metrics["eval_return"] > 0
    assert metrics["num-examples"] == metrics["eval_episodes"] == 2 and metrics["agent"] == 1
    after_evaluation, _ = answer(_request("grad", 1, params, run_id=302), evaluated)
    np.testing.assert_array_equal(after_evaluation, anchor)  # each message reseeds: evaluating changes no batch


@pytest.mark.parametrize("run_config", [TINY, TINY_PPO, {"task": "tabular"}], ids=["fedpg", "fedppo", "tabular"])
@pytest.mark.parametrize("field", ["params", "global_grad", "advantage_scale"])
def test_a_non_finite_server_message_is_refused_before_anything_changes(run_config, field):
    from sb3_fedpg.flower.agent import get_agent

    config = parse_run_config(run_config)
    params = get_agent(config, 501, 1, 2).initial_params()
    memory = InProcessMemory()
    answer(_request("grad", 1, params, run_id=501, run_config=run_config), memory)
    saved = memory.load()
    bad = {"params": params, "global_grad": np.zeros_like(params), "advantage_scale": 1.0}
    bad[field] = np.full_like(params, np.nan) if field != "advantage_scale" else float("inf")
    request = _request(
        "local", 1, bad["params"], bad["global_grad"], run_id=501, run_config=run_config, scale=bad["advantage_scale"]
    )
    with pytest.raises(ValueError, match=r"server sent a non-finite .* computed nothing"):
        answer(request, memory)
    after = memory.load()
    np.testing.assert_array_equal(after[1], saved[1])
    assert after[2] == saved[2]

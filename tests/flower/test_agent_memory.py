"""The agent's memory travels as an ArrayRecord (named arrays + a JSON skeleton), bit for bit; one function per phase."""

import numpy as np
import pytest
import torch as th
from flwr.app import Context, RecordDict

from sb3_fedpg.flower import agent as agent_module
from sb3_fedpg.flower.agent import NeuralAgent, flatten_state, unflatten_state
from sb3_fedpg.flower.client_app import ContextMemory
from sb3_fedpg.flower.config import parse_run_config
from sb3_fedpg.flower.phases import InProcessMemory, PhaseRequest, answer

TINY = {"n-envs-per-agent": 2, "n-steps": 8, "local-steps": 2, "net-arch": "8", "local-optimizer": "adam"}


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


def _request(phase, server_round, params, global_grad=None, run_id=7):
    if run_id == 101:  # the ClientApp path: a fresh process (and agent object) for every message
        for key in [k for k in agent_module._AGENT_CACHE if k[0] == run_id]:
            del agent_module._AGENT_CACHE[key]
    return PhaseRequest(phase, run_id, TINY, 1, 2, server_round, params, global_grad)


def test_context_state_and_worker_memory_give_the_same_replies():
    # A ClientApp that keeps the agent's memory in context.state (rebuilt from arrays every message) and a worker that
    # keeps the agent object must compute the same bits: that is what makes simulation == deployment.
    params = NeuralAgent(parse_run_config(TINY), 1, 2).initial_params()
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    via_context, via_worker = ContextMemory(context), InProcessMemory()
    for server_round in (1, 2):
        replies = []
        for run_id, memory in ((101, via_context), (202, via_worker)):
            anchor, metrics = answer(_request("grad", server_round, params, run_id=run_id), memory)
            delta, _ = answer(_request("local", server_round, params, anchor, run_id=run_id), memory)
            replies.append((anchor, delta, metrics))
        (a1, d1, m1), (a2, d2, m2) = replies
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(d1, d2)
        assert m1["num-examples"] == m2["num-examples"] == 16 and m1["agent"] == 1
        params = params + d1
    assert "fedpg-agent" in context.state.array_records  # the critic and Adam moments are arrays there
    assert len(context.state.array_records["fedpg-agent"]) > 3


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

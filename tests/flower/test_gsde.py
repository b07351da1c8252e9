"""gSDE on Flower: ``use-sde`` / ``sde-sample-freq`` build every agent (and the server's model) with gSDE."""

import numpy as np
import pytest

from sb3_fedpg.flower import agent as agent_module
from sb3_fedpg.flower.agent import NeuralAgent, make_agent_model
from sb3_fedpg.flower.config import parse_run_config
from sb3_fedpg.flower.phases import InProcessMemory, PhaseRequest, answer
from sb3_fedpg.flower.server_app import server_anchors

GSDE = {
    "env-id": "sb3_fedpg/HeteroPointMass-v0",
    "n-envs-per-agent": 2,
    "n-steps": 8,
    "local-steps": 2,
    "net-arch": "8",
    "use-sde": True,
    "sde-sample-freq": 4,
}
GSDE_PPO = {**GSDE, "algorithm": "fedppo", "ppo-n-steps": 8, "ppo-batch-size": 8, "ppo-n-epochs": 2}


def test_gsde_run_config_keys():
    for run_config in (GSDE, GSDE_PPO):
        config = parse_run_config(run_config)
        assert config.algorithm_kwargs()["use_sde"] and config.algorithm_kwargs()["sde_sample_freq"] == 4
    assert "use_sde" not in parse_run_config({}).algorithm_kwargs()  # the constructors' defaults
    with pytest.raises(ValueError, match=r"'sde-sample-freq'.*only applies with gSDE"):
        parse_run_config({"sde-sample-freq": 4})
    with pytest.raises(ValueError, match="'use-sde' is for the neural task"):
        parse_run_config({"use-sde": True, "task": "tabular"})
    with pytest.raises(ValueError, match=r"gSDE.*can only be used with continuous actions"):
        make_agent_model(parse_run_config({"use-sde": True, "env-id": "sb3_fedpg/HeteroCartPole-v0"}), 0, 2)


def _round(run_config, run_id, params):
    for key in [k for k in agent_module._AGENT_CACHE if k[0] == run_id]:  # a fresh agent process
        del agent_module._AGENT_CACHE[key]
    memory = InProcessMemory()
    reply, metrics = answer(PhaseRequest("grad", run_id, run_config, 1, 2, 1, params), memory)
    (anchor,), scale = server_anchors(parse_run_config(run_config), params.size, [reply], [metrics])
    request = PhaseRequest("local", run_id, run_config, 1, 2, 1, params, anchor, scale)
    delta, _ = answer(request, memory)
    return anchor, delta


@pytest.mark.parametrize("run_config", [GSDE, GSDE_PPO], ids=["fedpg", "fedppo"])
def test_gsde_agents_run_a_round_reproducibly(run_config):
    agent = NeuralAgent(parse_run_config(run_config), 1, 2)
    assert agent.model.use_sde and agent.model._actor.gsde is not None
    log_std = agent.model._actor.log_std
    assert log_std.stop - log_std.start == 8 * 2  # gSDE's (latent_dim, action_dim) log_std is federated
    params = agent.initial_params()
    anchor, delta = _round(run_config, 501, params)
    assert np.isfinite(anchor).all() and np.isfinite(delta).all()
    assert np.abs(delta[log_std]).max() > 0  # the agents' log_std moves, and is averaged like the other parameters
    again = _round(run_config, 502, params)  # the exploration matrices come from the message's seeded streams
    np.testing.assert_array_equal(anchor, again[0])
    np.testing.assert_array_equal(delta, again[1])

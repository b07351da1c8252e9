"""Federated observation normalisation on Flower: agents send their deltas, the server merges them exactly."""

import pickle

import numpy as np
import pytest

from sb3_fedpg.common import fedmath
from sb3_fedpg.flower.agent import get_agent
from sb3_fedpg.flower.config import parse_run_config
from sb3_fedpg.flower.phases import REPLY_ARRAYS, InProcessMemory, PhaseRequest, answer
from sb3_fedpg.flower.server_app import FedPGServer, server_anchors
from tests.common.test_federated_vec_normalize import TOL, RecordObservations, pooled

RUN_CONFIG = {
    "env-id": "sb3_fedpg/HeteroPointMass-v0",
    "min-agents": 2,
    "n-envs-per-agent": 2,
    "net-arch": "8",
    "n-steps": 8,
    "local-steps": 2,
    "normalize-obs": True,
}


def replay(run_config, n_agents, rounds, run_id, left_out=()):
    """
    The Flower round with the server's own code (FedPGServer's merge, server_anchors, fedmath's server halves) and
    the agents' phase function, outside Flower. ``left_out``: (round, agent) pairs whose statistics the server does
    not merge (a reply without valid statistics).

    :return: the server, the parameters after every round and each agent's recorded raw observations
    """
    run_config = {**run_config, "num-agents": n_agents, "num-rounds": rounds}
    config = parse_run_config(run_config)
    server = FedPGServer(None, config)
    recorders = []
    for i in range(n_agents):
        normalizer = get_agent(config, run_id, i, n_agents).normalizer
        normalizer.venv = RecordObservations(normalizer.venv)
        normalizer.venv.seen.append(normalizer.get_original_obs())  # the agent's first reset, when it was built
        recorders.append(normalizer.venv)
    server.start_obs_statistics(get_agent(config, run_id, 0, n_agents).normalizer.global_moments(), n_agents)
    memories = [InProcessMemory() for _ in range(n_agents)]
    params = get_agent(config, run_id, 0, n_agents).initial_params()
    history = [params]
    for server_round in range(1, rounds + 1):
        obs = {name: array.numpy() for name, array in server.obs_arrays().items()}
        common = (run_id, run_config)
        grads = [
            answer(PhaseRequest("grad", *common, i, n_agents, server_round, params, obs_stats=obs), memories[i])
            for i in range(n_agents)
        ]
        anchors, scale = server_anchors(config, params.size, [v for v, _ in grads], [m for _, m in grads])
        g = fedmath.server_global_gradient(anchors, server.aggregator)
        obs = {name: array.numpy() for name, array in server.obs_arrays().items()}
        local = [
            answer(PhaseRequest("local", *common, i, n_agents, server_round, params, g, scale, None, obs), memories[i])
            for i in range(n_agents)
        ]
        nodes = [i for i in range(n_agents) if (server_round, i) not in left_out]
        server.reply_arrays = {i: local[i][1][REPLY_ARRAYS] for i in nodes}
        assert server.merge_obs_deltas(nodes, {i: local[i][1] for i in nodes}, server_round) == nodes
        local_params = params + np.stack([v for v, _ in local])
        params = np.asarray(fedmath.server_new_params(params, local_params, 1.0, server.aggregator), dtype=params.dtype)
        history.append(params)
    return server, np.stack(history), recorders


def _assert_pooled(moments, recorders):
    reference = pooled([batch for recorder in recorders for batch in recorder.seen], (4,))
    count, mean, m2 = moments[""]
    assert count == pytest.approx(reference.count, abs=TOL)
    np.testing.assert_allclose(mean, reference.mean, rtol=0, atol=TOL)
    np.testing.assert_allclose(m2 / count, reference.var, rtol=0, atol=TOL)


def test_server_merge_of_the_agents_deltas_is_the_pooled_statistics():
    server, history, recorders = replay(RUN_CONFIG, 2, 3, run_id="obs-norm-fast")
    _assert_pooled(server.obs_moments, recorders)
    assert list(server.obs_merged_round) == [3, 3]
    assert np.abs(history[-1] - history[0]).max() > 0


def test_a_delta_left_out_of_the_merge_is_sent_again_not_lost():
    # Agent 1's statistics of round 1 are not merged (its reply was invalid): it keeps them and sends them with its
    # next reply, so after the run the server still holds every observation once.
    server, _, recorders = replay(RUN_CONFIG, 2, 2, run_id="obs-norm-dropped", left_out={(1, 1)})
    # (an agent that cleared its delta when sending it would leave round 1's observations out: a smaller count)
    _assert_pooled(server.obs_moments, recorders)
    assert list(server.obs_merged_round) == [2, 2]
    config = parse_run_config({**RUN_CONFIG, "num-agents": 2, "num-rounds": 2})
    agent = get_agent(config, "obs-norm-dropped", 1, 2)
    assert agent.normalizer.obs_deltas[0].count > 0  # round 2's delta: cleared only by the next message's confirmation


def test_server_leaves_out_malformed_statistics():
    config = parse_run_config({**RUN_CONFIG, "num-agents": 2})
    server = FedPGServer(None, config)
    prior = {"": (1e-4, np.zeros(4), np.full(4, 1e-4))}
    server.start_obs_statistics(prior, 2)
    good = {"obs-delta-count": np.array([3.0]), "obs-delta-mean": np.ones(4), "obs-delta-m2": np.ones(4)}
    server.reply_arrays = {
        10: good,
        11: {**good, "obs-delta-m2": -np.ones(4)},  # negative M2
        12: {**good, "obs-delta-mean": np.ones(3)},  # wrong shape
        13: {"obs-delta-count": np.array([np.nan]), "obs-delta-mean": np.ones(4), "obs-delta-m2": np.ones(4)},
    }
    metrics = {node: {"agent": node - 10} for node in (10, 11, 12, 13)}
    assert server.merge_obs_deltas([10, 11, 12, 13], metrics, 1) == [0]
    merged = fedmath.merge_running_moments([prior[""], (3.0, np.ones(4), np.ones(4))])
    np.testing.assert_array_equal(server.obs_moments[""][1], merged[1])
    assert list(server.obs_merged_round) == [1, -1]


def test_normalize_obs_config_is_checked():
    assert parse_run_config({"normalize-obs": True}).normalize_obs
    with pytest.raises(ValueError, match="'normalize-obs' is for the neural task"):
        parse_run_config({"normalize-obs": True, "task": "tabular"})
    with pytest.raises(ValueError, match="cannot be combined with 'resume'"):
        parse_run_config({"normalize-obs": True, "resume": True})
    with pytest.raises(ValueError, match="'clip-obs' must be > 0"):
        parse_run_config({"clip-obs": 0})


@pytest.mark.slow
def test_simulation_merges_like_the_replay(tmp_path):
    # Flower's simulation engine (agents' memory in context.state, statistics in the messages): the merged statistics
    # it saves are those of the replay, whose every observation was recorded: the pooled statistics.
    from sb3_fedpg.flower.simulation import run_simulation

    run_config = {**RUN_CONFIG, "num-rounds": 2, "output-dir": str(tmp_path / "out")}
    history = run_simulation(2, run_config, num_cpus=2)
    server, expected, recorders = replay(RUN_CONFIG, 2, 2, run_id="obs-norm-sim")
    np.testing.assert_allclose(history, expected, rtol=0, atol=1e-6)
    with open(tmp_path / "out" / "vecnormalize.pkl", "rb") as file:
        saved = pickle.load(file)
    count, mean, m2 = server.obs_moments[""]
    assert saved.obs_rms.count == pytest.approx(count, abs=TOL)
    np.testing.assert_allclose(saved.obs_rms.mean, mean, rtol=0, atol=TOL)
    np.testing.assert_allclose(saved.obs_rms.var, m2 / count, rtol=0, atol=TOL)
    _assert_pooled(server.obs_moments, recorders)

"""Fast-FedPG in Flower's simulation engine (Ray): equivalence with the in-process run, neural training, faults."""

import csv
import json
import time

import gymnasium as gym
import numpy as np
import pytest

from sb3_fedpg import FederatedPG
from sb3_fedpg.common.wandb_logger import read_offline_history
from sb3_fedpg.flower.agent import make_tabular_mdp
from sb3_fedpg.flower.config import parse_run_config
from sb3_fedpg.flower.server_app import federation_noise, server_anchors
from sb3_fedpg.flower.simulation import run_simulation
from sb3_fedpg.tabular import agent_objectives, exact_federated_run


def read_rounds(folder):
    return [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("correction", [True, False])
def test_simulation_matches_in_process_exact_run(tmp_path, correction, monkeypatch):
    # Exact tabular gradients are deterministic: the Flower run must follow the in-process
    # fedmath.fedpg_round run (same Garnet MDP, same θ̄_t sequence) to 1e-10.
    n_agents, rounds, local_steps = 4, 5, 10
    run_config = {
        "task": "tabular",
        "num-rounds": rounds,
        "local-steps": local_steps,
        "learning-rate": 1.0,
        "correction": correction,
        "min-agents": n_agents,
        "tabular-tau": 0.1,
        "output-dir": str(tmp_path / "out"),
        "log-formats": "csv,wandb" if correction else "csv",
        "eval-every": 2 if correction else 0,
    }
    monkeypatch.setenv("WANDB_MODE", "offline")
    history = run_simulation(n_agents, run_config, num_cpus=2)
    config = parse_run_config(run_config)
    reference = exact_federated_run(
        make_tabular_mdp(config, n_agents), local_steps, rounds, learning_rate=1.0, tau=0.1, correction=correction
    )
    expected = reference.params.reshape(rounds + 1, -1)
    assert history.shape == expected.shape
    assert np.abs(expected[-1] - expected[0]).max() > 0.1  # the parameters did move
    np.testing.assert_allclose(history, expected, rtol=0, atol=1e-10)
    assert all(r["phase1_agents"] == r["phase2_agents"] == n_agents for r in read_rounds(tmp_path / "out"))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "params.npy"), history[-1])
    if correction:
        # the ServerApp's metrics reached W&B (offline), one row per round
        rows = read_offline_history(tmp_path / "out")
        assert [row["fed/round"] for row in rows] == list(range(1, rounds + 1))
        # the server's fed/ metrics are the exact run's (known values), float64 payloads counted at 8 bytes
        n_params = expected.shape[1]
        for t, row in enumerate(rows):
            assert row["fed/agents_phase1"] == row["fed/agents_phase2"] == n_agents
            np.testing.assert_allclose(row["fed/drift"], reference.drift[t], rtol=1e-9)
            np.testing.assert_allclose(row["fed/correction_norm"], reference.correction_norm[t], rtol=1e-9)
            assert row["fed/bytes_up"] == row["fed/bytes_down"] == 2 * n_params * n_agents * 8
        # federated evaluation (@app.evaluate) in rounds 2, 4 and the last: each agent's exact J_i of the global policy
        mdp = make_tabular_mdp(config, n_agents)
        evaluated = {r["round"]: r["eval_returns"] for r in read_rounds(tmp_path / "out") if "eval_returns" in r}
        assert sorted(evaluated) == [2, 4, 5]
        for server_round, returns in evaluated.items():
            expected_j = np.ravel(agent_objectives(mdp, history[server_round][None], 0.1))
            np.testing.assert_allclose([returns[str(i)] for i in range(n_agents)], expected_j, rtol=0, atol=1e-12)
            (row,) = [row for row in rows if row["fed/round"] == server_round]
            np.testing.assert_allclose(row["eval/mean_return"], np.mean(expected_j), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_neural_simulation_trains_with_8_agents_and_rejects_a_malformed_anchor(tmp_path):
    # 8 virtual agents on heterogeneous CartPole. Agent 3 sends an anchor of the wrong shape in
    # round 2: it is rejected, left out of g and not asked for phase 2; the run goes on.
    out = tmp_path / "out"
    run_config = {
        "num-rounds": 12,
        "heterogeneity": 0.5,
        "min-agents": 6,
        "output-dir": str(out),
        "fault-agent": 3,
        "fault-kind": "shape",
        "fault-phase": "grad",
        "fault-rounds": "2",
        "log-formats": "csv",
    }
    history = run_simulation(8, run_config, num_cpus=2)
    rounds = read_rounds(out)
    assert len(rounds) == 12 and len(history) == 13
    assert rounds[1]["phase1_agents"] == 7 and rounds[1]["phase2_agents"] == 7
    (reason,) = rounds[1]["phase1_rejected"].values()
    assert "wrong shape" in reason
    assert rounds[1]["phase2_rejected"] == {}  # the rejected agent was never asked for phase 2
    assert all(r["phase2_agents"] == 8 for i, r in enumerate(rounds) if i != 1)

    # it learns: the agents' episode returns (each under its own reward) go up
    progress = list(csv.DictReader(open(out / "progress.csv")))
    returns = [float(row["rollout/ep_rew_mean"]) for row in progress]
    assert np.mean(returns[-3:]) > np.mean(returns[:3]) + 2.0, returns
    for key in ("fed/drift", "fed/correction_norm", "fed/bytes_up", "fed/agent_7/ep_rew_mean"):
        assert key in progress[0]

    # the saved global policy is a normal FederatedPG model
    model = FederatedPG.load(out / "model.zip", weights_only=True)  # a weights-only file: nothing to unpickle
    np.testing.assert_array_equal(model.get_global_parameters().numpy(), history[-1])
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))

    # resume: 2 more rounds continue from the checkpoint
    more = run_simulation(8, {**run_config, "num-rounds": 14, "resume": True, "fault-kind": "none"}, num_cpus=2)
    np.testing.assert_array_equal(more[:13], history)
    assert len(more) == 15


@pytest.mark.slow
def test_simulation_attached_to_a_local_ray_cluster(tmp_path):
    # A Ray head on 127.0.0.1 started on its own (as on a cluster's head machine); the simulation attaches to it and
    # reproduces the in-process exact run. Everything Ray started is gone after the cluster is stopped.
    import os
    import pathlib
    import shutil
    import tempfile

    from sb3_fedpg.flower.simulation import LocalRayCluster

    n_agents, rounds = 3, 3
    run_config = {"task": "tabular", "num-rounds": rounds, "local-steps": 4, "learning-rate": 1.0, "min-agents": n_agents}
    run_config["output-dir"] = str(tmp_path / "out")
    temp = tempfile.mkdtemp(prefix="/tmp/rc")  # short: Ray keeps Unix sockets in it
    try:
        with LocalRayCluster(temp, num_cpus=2) as cluster:
            history = run_simulation(n_agents, run_config, ray_address=cluster.address)
        assert list(pathlib.Path(temp).glob("session_*/logs/worker-*")), "the ClientApps did not run on our cluster"
        time.sleep(2)
        leftovers = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if temp in cmdline:
                leftovers.append(cmdline.replace("\0", " ")[:120])
        assert not leftovers
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    config = parse_run_config(run_config)
    reference = exact_federated_run(make_tabular_mdp(config, n_agents), 4, rounds, learning_rate=1.0, correction=True)
    np.testing.assert_allclose(history, reference.params.reshape(rounds + 1, -1), rtol=0, atol=1e-10)


def test_fedppo_simulation_is_its_agents_phases_averaged(tmp_path):
    # algorithm="fedppo": every agent runs FederatedPPO's epochs on its own rollout (with the correction); the server
    # averages. Replayed here with the same phase function outside Flower, the global parameters must agree.
    from sb3_fedpg import FederatedPPO
    from sb3_fedpg.flower.agent import NeuralAgent
    from sb3_fedpg.flower.phases import InProcessMemory, PhaseRequest, answer

    n_agents, rounds = 2, 2
    run_config = {
        "algorithm": "fedppo",
        "num-rounds": rounds,
        "min-agents": n_agents,
        "n-envs-per-agent": 2,
        "net-arch": "8",
        "ppo-n-steps": 16,
        "ppo-batch-size": 8,
        "ppo-n-epochs": 2,
        "ppo-learning-rate": 1e-2,
        "ppo-correction": True,
        "output-dir": str(tmp_path / "out"),
    }
    history = run_simulation(n_agents, run_config, num_cpus=2)
    config = parse_run_config({**run_config, "num-agents": n_agents})
    params = NeuralAgent(config, 0, n_agents).initial_params().astype(np.float64)
    memories = [InProcessMemory() for _ in range(n_agents)]
    expected = [params]
    for server_round in range(1, rounds + 1):
        theta = expected[-1].astype(np.float32)
        replies = [
            answer(PhaseRequest("grad", "replay", run_config, i, n_agents, server_round, theta), memories[i])
            for i in range(n_agents)
        ]
        anchors, scale = server_anchors(config, theta.size, [r[0] for r in replies], [r[1] for r in replies])
        noise = federation_noise([r[1] for r in replies], scale)
        g = np.mean(anchors.astype(np.float64), axis=0).astype(np.float32)
        deltas = [
            answer(
                PhaseRequest("local", "replay", run_config, i, n_agents, server_round, theta, g, scale, noise), memories[i]
            )[0]
            for i in range(n_agents)
        ]
        expected.append(expected[-1] + np.mean(np.stack(deltas).astype(np.float64), axis=0))
    assert history.shape == (rounds + 1, params.size)
    assert np.abs(history[-1] - history[0]).max() > 1e-3  # the epochs moved the policy
    np.testing.assert_allclose(history, np.stack(expected), rtol=0, atol=1e-5)
    model = FederatedPPO.load(tmp_path / "out" / "model.zip", weights_only=True)  # the global policy, weights-only
    np.testing.assert_allclose(model.get_global_parameters().numpy(), history[-1], rtol=0, atol=1e-6)

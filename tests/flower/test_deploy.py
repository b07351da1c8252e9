"""
A real Flower deployment on 127.0.0.1 (SuperLink + SuperNodes + their agent workers as separate processes,
started and stopped by process group here). Each message still starts a fresh ClientApp process (about a
second each), so these runs use the cheap deterministic tabular task and few rounds.
"""

import json
import time

import numpy as np
import pytest

from sb3_fedpg.flower.deploy import LoopbackDeployment

pytestmark = pytest.mark.slow


def read_rounds(folder):
    path = folder / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_deployment_survives_a_killed_supernode_and_a_malformed_update(tmp_path):
    # 3 SuperNodes. Round 1: agent 2 sends a NaN parameter change -> rejected and logged, the round
    # goes on with agents 0 and 1. Then agent 1's SuperNode is killed: round 2 finishes with the other two.
    out = tmp_path / "out"
    run_config = {
        "task": "tabular",
        "num-rounds": 2,
        "num-agents": 3,
        "min-agents": 2,
        "phase-timeout-s": 45.0,
        "output-dir": str(out),
        "fault-agent": 2,
        "fault-kind": "nan",
        "fault-phase": "local",
        "fault-rounds": "1",
    }
    with LoopbackDeployment(tmp_path / "deploy", 3) as deployment:
        deployment.start()
        run = deployment.submit(run_config)
        deadline = time.monotonic() + 240
        while not read_rounds(out) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.5)
        assert read_rounds(out), deployment.log("flwr_run")
        deployment.kill_process("node1")
        code = run.wait(timeout=240)
        log = deployment.log("flwr_run")
    assert code == 0, log
    first, second = read_rounds(out)
    assert first["phase1_agents"] == 3 and first["phase2_agents"] == 2
    (reason,) = first["phase2_rejected"].values()
    assert "non-finite" in reason
    assert "left out: rejected delta" in log  # the rejection is in the ServerApp's log
    assert second["phase2_agents"] == 2 and not second.get("skipped")
    history = np.load(out / "checkpoint.npz")["history"]
    assert history.shape == (3, 40) and np.isfinite(history).all()
    assert not np.allclose(history[2], history[1])


def test_a_killed_agent_worker_is_left_out_of_its_round_and_restarted(tmp_path):
    # Agent 1's worker kills itself (SIGKILL) in phase 1 of round 2: that round goes on with agents 0 and 2, the
    # supervisor restarts the worker, and round 3 has all three agents again.
    out = tmp_path / "out"
    run_config = {
        "task": "tabular",
        "num-rounds": 3,
        "num-agents": 3,
        "min-agents": 2,
        "phase-timeout-s": 90.0,
        "output-dir": str(out),
        "fault-agent": 1,
        "fault-kind": "crash",
        "fault-phase": "grad",
        "fault-rounds": "2",
    }
    with LoopbackDeployment(tmp_path / "deploy", 3) as deployment:
        deployment.start()
        code = deployment.run(run_config, timeout=400)
        log, worker_log = deployment.log("flwr_run"), deployment.log("worker_node1")
    assert code == 0, log
    first, second, third = read_rounds(out)
    assert first["phase1_agents"] == first["phase2_agents"] == 3
    assert second["phase1_agents"] == second["phase2_agents"] == 2 and not second.get("skipped")
    (reason,) = second["phase1_rejected"].values()
    assert "error reply" in reason and "agent worker" in reason
    assert third["phase1_agents"] == third["phase2_agents"] == 3
    assert "exited with -9; restarting" in worker_log
    assert worker_log.count("listening on 127.0.0.1:") == 2


def test_tls_and_supernode_auth_refuse_an_unregistered_node(tmp_path):
    out = tmp_path / "out"
    with LoopbackDeployment(tmp_path / "deploy", 2, auth=True) as deployment:
        deployment.start()
        intruder = deployment.start_supernode(1, register=False, key_name="intruder")
        code = deployment.run(
            {"task": "tabular", "num-rounds": 1, "num-agents": 2, "min-agents": 2, "output-dir": str(out)}, timeout=240
        )
        log = deployment.log("flwr_run")
        intruder_code = intruder.wait(timeout=60)
        intruder_log = deployment.log("intruder")
    assert code == 0, log
    (only,) = read_rounds(out)
    assert only["nodes"] == 2 and only["phase2_agents"] == 2
    assert intruder_code != 0
    assert "Failed to activate SuperNode" in intruder_log
    assert (tmp_path / "deploy" / "certificates" / "ca.crt").exists()


#: FederatedPPO agents (algorithm="fedppo"): phase 2 runs PPO epochs on the rollout of phase 1, kept by the worker
FEDPPO = {
    "algorithm": "fedppo",
    "ppo-n-steps": 8,
    "ppo-batch-size": 8,
    "ppo-n-epochs": 2,
    "ppo-correction": True,
    "ppo-learning-rate": 1e-2,
}


@pytest.mark.parametrize("algorithm", [{}, FEDPPO], ids=["fedpg", "fedppo"])
def test_neural_deployment_equals_simulation_bit_for_bit(tmp_path, algorithm):
    # Every (agent, round, phase) reseeds all of the agent's random streams (torch, NumPy, the env, and the
    # NumPy rollout's action sampler), and each message starts from fresh episodes: a deployment, whose
    # ClientApp is a new process per message, must therefore reproduce the simulation exactly.
    from sb3_fedpg.flower.simulation import run_simulation

    run_config = {
        "task": "neural",
        "num-rounds": 2,
        "num-agents": 2,
        "min-agents": 2,
        # generous: a phase ends as soon as its replies are in, and on an overloaded machine Ray's first actors and the
        # agents' torch imports can outlast two minutes (messages live as long as the phase: they would expire)
        "phase-timeout-s": 400.0,
        "n-envs-per-agent": 2,
        "n-steps": 8,
        "local-steps": 2,
        "net-arch": "16",
        "heterogeneity": 1.0,
        **algorithm,
    }
    simulated = run_simulation(2, {**run_config, "output-dir": str(tmp_path / "sim")}, num_cpus=2)
    out = tmp_path / "deployed"
    with LoopbackDeployment(tmp_path / "deploy", 2) as deployment:
        deployment.start()
        code = deployment.run({**run_config, "output-dir": str(out)}, timeout=900)
        log = deployment.log("flwr_run")
    assert code == 0, log
    deployed = np.load(out / "checkpoint.npz")["history"]
    assert deployed.shape == simulated.shape == (3, simulated.shape[1])
    assert not np.array_equal(simulated[2], simulated[0])  # it trained
    np.testing.assert_array_equal(deployed, simulated)


def test_the_command_line_exit_code_says_whether_the_run_completed(tmp_path, capsys):
    # `flwr run` exits 0 even when the ServerApp fails; the command asks the SuperLink for the run's status.
    from sb3_fedpg.flower.deploy import main

    common = ["--agents", "2", "--timeout", "300"]
    good = main([*common, "--workdir", str(tmp_path / "good"), "--run-config", 'task="tabular" num-rounds=1'])
    assert good == 0, capsys.readouterr().out
    # a run the ServerApp refuses: min-agents above the federation, one skipped round allowed
    bad_config = 'task="tabular" num-rounds=2 min-agents=3 max-skipped-rounds=1 wait-for-agents-s=2 phase-timeout-s=5'
    bad = main([*common, "--workdir", str(tmp_path / "bad"), "--run-config", bad_config])
    out = capsys.readouterr().out
    assert bad == 1, out
    assert "the run did not complete" in out and "finished:failed" in out

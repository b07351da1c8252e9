"""The long-lived agent worker: a ClientApp forwards to it without importing torch, it answers like the in-process agent,
it refuses a client without the secret, and its supervisor restarts it."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from sb3_fedpg.flower.phases import InProcessMemory, PhaseRequest, answer
from sb3_fedpg.flower.worker import ADDR_FILE, KEY_FILE, PID_FILE, request_worker

ROOT = pathlib.Path(__file__).resolve().parents[2]
TABULAR = {"task": "tabular", "local-steps": 3, "learning-rate": 0.5}

# A fresh process, like Flower's per-message ClientApp process: one phase through the ClientApp's handler.
CLIENTAPP = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity  # what flwr-clientapp sets before calling the app
    from sb3_fedpg.flower.client_app import handle
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 9, 5
    folder, phase, params, grad = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    arrays = {"params": Array(np.array(params))}
    if grad is not None:
        arrays["global-grad"] = Array(np.array(grad))
    msg = Message(RecordDict({"arrays": ArrayRecord(arrays)}), dst_node_id=5, message_type="train." + phase, group_id="1")
    node_config = {"partition-id": 1, "num-partitions": 3, "agent-worker": folder}
    context = Context(run_id=9, node_id=5, node_config=node_config, state=RecordDict(), run_config=RUN_CONFIG)
    reply = handle(msg, context, phase)
    key = "anchor" if phase == "grad" else "delta"
    heavy = sorted(m for m in ("torch", "stable_baselines3") if m in sys.modules)
    vector = reply.content[key][key].numpy().tolist()
    print(json.dumps({"vector": vector, "metrics": dict(reply.content["metrics"]), "heavy": heavy}))
    """
).replace("RUN_CONFIG", repr(TABULAR))


def _clientapp(folder, phase, params, grad=None):
    args = [sys.executable, "-c", CLIENTAPP, str(folder), phase, json.dumps(params.tolist())]
    args.append(json.dumps(None if grad is None else grad.tolist()))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def worker(tmp_path):
    folder = tmp_path / "worker"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "worker.log", "wb")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "sb3_fedpg.flower.worker", "--dir", str(folder)], env=env, stdout=log, stderr=log
    )
    yield folder, tmp_path / "worker.log"
    supervisor.terminate()
    supervisor.wait(timeout=30)
    log.close()


def test_importing_the_clientapp_imports_no_torch():
    code = (
        "import sys, sb3_fedpg.flower.client_app; print(sorted(m for m in ('torch', 'stable_baselines3') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.slow
def test_clientapp_forwards_to_the_worker_without_heavy_imports(worker):
    folder, _ = worker
    params = np.zeros(40)
    anchor = _clientapp(folder, "grad", params)
    assert oct((folder).stat().st_mode & 0o777) == "0o700" and oct((folder / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert anchor["heavy"] == []  # the per-message process never imports torch or SB3
    assert anchor["metrics"]["agent"] == 1 and anchor["metrics"]["num-examples"] == 1
    grad = np.array(anchor["vector"]) * 0.5
    delta = _clientapp(folder, "local", params, grad)  # the worker kept the anchor between the two processes

    # The same phases computed in this process (what a simulation does) give the same bits.
    memory = InProcessMemory()
    expected_anchor, _ = answer(PhaseRequest("grad", 10, TABULAR, 1, 3, 1, params), memory)
    expected_delta, _ = answer(PhaseRequest("local", 10, TABULAR, 1, 3, 1, params, grad), memory)
    np.testing.assert_array_equal(anchor["vector"], expected_anchor)
    np.testing.assert_array_equal(delta["vector"], expected_delta)
    assert np.abs(expected_delta).max() > 0

    # A phase 2 of another round has no anchor: the worker's error comes back as the ClientApp's exception.
    request = vars(PhaseRequest("local", 9, TABULAR, 1, 3, 2, params, grad))
    with pytest.raises(RuntimeError, match="holds the anchor of round 1, not of round 2"):
        request_worker(folder, request, timeout=60)


@pytest.mark.slow
def test_worker_refuses_a_client_without_the_secret_and_is_restarted_when_killed(worker, tmp_path):
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    folder, log = worker
    request = vars(PhaseRequest("grad", 3, TABULAR, 0, 3, 1, np.zeros(40)))
    request_worker(folder, request, timeout=60)  # waits for the worker to listen
    host, _, port = (folder / ADDR_FILE).read_text().rpartition(":")
    with pytest.raises(AuthenticationError):
        Client((host, int(port)), authkey=b"not the secret")
    first = int((folder / PID_FILE).read_text())
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while int((folder / PID_FILE).read_text()) == first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert int((folder / PID_FILE).read_text()) != first
    vector, _ = request_worker(folder, request, timeout=60)  # the restarted worker answers
    assert vector.shape == (40,)
    assert "exited with -9; restarting" in log.read_text()

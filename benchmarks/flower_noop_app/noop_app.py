"""
A no-op Flower app with the messages of one Fast-FedPG round: what Flower itself costs per round.

The ClientApp answers at once with a random vector of the right size (distinct per agent and phase, like real
replies) and the same metric names.

Imports only Flower and NumPy in the ClientApp; the ServerApp reuses the real server's message builder and
push/pull loop (:func:`sb3_fedpg.flower.server_app.phase_messages`, :func:`~sb3_fedpg.flower.server_app.push_and_pull`).
"""

import json
import pathlib
import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


@client.train("grad")
def grad(msg: Message, context: Context) -> Message:
    return _reply(msg, context, "anchor")


@client.train("local")
def local(msg: Message, context: Context) -> Message:
    return _reply(msg, context, "delta")


def _reply(msg: Message, context: Context, key: str) -> Message:
    params = msg.content.array_records["arrays"]["params"].numpy()
    agent = int(context.node_config.get("partition-id", 0))
    # A different vector from every agent in every phase, as real replies are. Flower stores objects by content hash;
    # with identical zero replies from all nodes, the no-op app measured about twice the CPU-seconds per round of the
    # real app (4 agents, first run of the benchmark), so it would not have been a floor.
    rng = np.random.default_rng([agent, int(msg.metadata.group_id), key == "delta"])
    vector = rng.standard_normal(params.shape[0]).astype(params.dtype)
    content = RecordDict(
        {key: ArrayRecord({key: Array(vector)}), "metrics": MetricRecord({"agent": agent, "num-examples": 0})}
    )
    return Message(content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    from sb3_fedpg.flower.server_app import phase_messages, push_and_pull, wait_for_agents

    config = context.run_config
    timeout, poll = float(config["phase-timeout-s"]), float(config["reply-poll-s"])
    out = pathlib.Path(str(config["output-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    nodes = wait_for_agents(grid, int(config["num-agents"]), timeout)
    params = np.zeros(int(config["num-params"]), dtype=np.float32)
    for server_round in range(1, int(config["num-rounds"]) + 1):
        t0 = time.perf_counter()
        phase1 = RecordDict({"arrays": ArrayRecord({"params": Array(params)})})
        replies1 = push_and_pull(grid, phase_messages(nodes, phase1, "train.grad", server_round, timeout), timeout, poll)
        global_grad = params + 1.0  # a second, different array, as in the real phase 2
        phase2 = RecordDict({"arrays": ArrayRecord({"params": Array(params), "global-grad": Array(global_grad)})})
        replies2 = push_and_pull(grid, phase_messages(nodes, phase2, "train.local", server_round, timeout), timeout, poll)
        ok = [sum(not r.has_error() for r in replies) for replies in (replies1, replies2)]
        params = params + 1e-3  # the next round's θ̄ differs, as in a real run
        summary = {"round": server_round, "phase1_agents": ok[0], "phase2_agents": ok[1], "round_s": time.perf_counter() - t0}
        with open(out / "rounds.jsonl", "a") as file:
            file.write(json.dumps(summary) + "\n")

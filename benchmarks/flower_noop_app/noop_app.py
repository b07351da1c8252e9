"""
A no-op Flower app with the messages of one Fast-FedPG round: what Flower itself costs per round.

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
    metrics = {"agent": int(context.node_config.get("partition-id", 0)), "num-examples": 0}
    content = RecordDict({key: ArrayRecord({key: Array(np.zeros_like(params))}), "metrics": MetricRecord(metrics)})
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
        phase2 = RecordDict({"arrays": ArrayRecord({"params": Array(params), "global-grad": Array(params)})})
        replies2 = push_and_pull(grid, phase_messages(nodes, phase2, "train.local", server_round, timeout), timeout, poll)
        ok = [sum(not r.has_error() for r in replies) for replies in (replies1, replies2)]
        summary = {"round": server_round, "phase1_agents": ok[0], "phase2_agents": ok[1], "round_s": time.perf_counter() - t0}
        with open(out / "rounds.jsonl", "a") as file:
            file.write(json.dumps(summary) + "\n")

"""
The Flower ClientApp: one Fast-FedPG agent per SuperNode.

Two message types, one per phase of the round: ``train.grad`` (reply with the anchor
``a_i = ĝ_i(θ̄)``) and ``train.local`` (reply with ``Δ_i = θ_{i,H} − θ̄``). The agent itself is
Flower-free (:mod:`sb3_fedpg.flower.agent`); this module only moves vectors between Flower
messages and the agent, and keeps the agent's memory (its anchor, critic, optimiser states) in
``context.state`` — in a deployment each message is handled by a fresh process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from sb3_fedpg.common.adversarial import faulty_message
from sb3_fedpg.flower.agent import get_agent, message_seed
from sb3_fedpg.flower.config import parse_run_config

#: Message types of the two phases (``@app.train("grad")`` / ``@app.train("local")``).
PHASE_GRAD = "train.grad"
PHASE_LOCAL = "train.local"
#: Keys of the agent's memory in ``context.state``.
STATE_ARRAYS = "fedpg-agent"
STATE_META = "fedpg-agent-meta"


def agent_identity(context: Context) -> tuple[int, int]:
    """
    Which agent this ClientApp is: ``partition-id`` / ``num-partitions`` from the node config
    (set by ``flower-supernode --node-config`` or by the simulation engine).

    :param context: the ClientApp's context
    :return: ``(agent index, number of agents)``
    """
    try:
        agent = int(context.node_config["partition-id"])
        n_agents = int(context.node_config["num-partitions"])
    except KeyError as error:
        raise ValueError(
            'the SuperNode has no agent identity: start it with --node-config "partition-id=<i> num-partitions=<N>"'
        ) from error
    if not 0 <= agent < n_agents:
        raise ValueError(f"partition-id={agent} is outside [0, num-partitions={n_agents})")
    return agent, n_agents


def _reply(msg: Message, key: str, vector: np.ndarray, metrics: dict[str, float]) -> Message:
    content = RecordDict({key: ArrayRecord({key: Array(np.ascontiguousarray(vector))}), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def _read_vector(msg: Message, key: str) -> np.ndarray:
    return msg.content[key][key].numpy()  # type: ignore[index]


def _load_memory(context: Context) -> bytes | None:
    if STATE_ARRAYS not in context.state.array_records:
        return None
    record = context.state.array_records[STATE_ARRAYS]
    return record["memory"].numpy().tobytes() if "memory" in record else None


def _save_memory(context: Context, memory: bytes, anchor: np.ndarray, server_round: int) -> None:
    arrays = {"anchor": Array(np.ascontiguousarray(anchor))}
    if memory:
        arrays["memory"] = Array(np.frombuffer(memory, dtype=np.uint8).copy())
    context.state[STATE_ARRAYS] = ArrayRecord(arrays)
    context.state[STATE_META] = ConfigRecord({"round": server_round})


def handle_anchor(msg: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """
    Phase 1 on agent ``i``: ``a_i = ĝ_i(θ̄)`` on a fresh batch, kept in ``context.state`` and sent back.

    :param msg: the server's ``train.grad`` message (``θ̄`` and the round number)
    :param context: the ClientApp's context (run config, node config, state)
    :param overrides: run config entries that take precedence over ``context.run_config``
    :return: the reply with the anchor and metrics
    """
    config = parse_run_config({**context.run_config, **(overrides or {})})
    agent_index, n_agents = agent_identity(context)
    agent = get_agent(config, context.run_id, agent_index, n_agents)
    server_round = int(msg.content["config"]["round"])  # type: ignore[index]
    agent.begin(_load_memory(context), message_seed(config, agent_index, server_round, 1))
    anchor = agent.anchor(_read_vector(msg, "params"))
    # Remember the anchor (exact, before any fault injection) for phase 2.
    _save_memory(context, agent.dump_state(), anchor, server_round)
    faulty = config.fault_applies(agent_index, "grad", server_round)
    sent = faulty_message(anchor, config.fault_kind) if faulty else anchor
    return _reply(msg, "anchor", sent, {"agent": agent_index, **agent.metrics()})


def handle_local(msg: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """
    Phase 2 on agent ``i``: the local round from ``θ̄`` with the stored anchor and the server's ``g``,
    reply ``Δ_i = θ_{i,H} − θ̄``.

    :param msg: the server's ``train.local`` message (``θ̄``, ``g``, round, learning rate)
    :param context: the ClientApp's context
    :param overrides: run config entries that take precedence over ``context.run_config``
    :return: the reply with the parameter change and metrics
    """
    config = parse_run_config({**context.run_config, **(overrides or {})})
    agent_index, n_agents = agent_identity(context)
    agent = get_agent(config, context.run_id, agent_index, n_agents)
    server_round = int(msg.content["config"]["round"])  # type: ignore[index]
    learning_rate = float(msg.content["config"]["learning-rate"])  # type: ignore[index]
    if STATE_ARRAYS not in context.state.array_records:
        raise RuntimeError(f"agent {agent_index} has no anchor: it missed phase 1 of round {server_round}")
    anchor_round = int(context.state.config_records[STATE_META]["round"])
    if anchor_round != server_round:
        raise RuntimeError(f"agent {agent_index} holds the anchor of round {anchor_round}, not of round {server_round}")
    anchor = context.state.array_records[STATE_ARRAYS]["anchor"].numpy()
    theta_bar = _read_vector(msg, "params")
    agent.begin(_load_memory(context), message_seed(config, agent_index, server_round, 2))
    delta = agent.local_round(theta_bar, anchor, _read_vector(msg, "global-grad"), learning_rate) - theta_bar
    _save_memory(context, agent.dump_state(), anchor, server_round)
    faulty = config.fault_applies(agent_index, "local", server_round)
    sent = faulty_message(delta, config.fault_kind) if faulty else delta
    return _reply(msg, "delta", sent, {"agent": agent_index, **agent.metrics()})


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """
    Build the ClientApp.

    :param overrides: kebab-case run config entries that take precedence over ``context.run_config``
        (used by :func:`sb3_fedpg.flower.simulation.run_simulation`, whose runs have no run config)
    :return: the ClientApp answering ``train.grad`` (anchor) and ``train.local`` (local steps)
    """
    overrides = dict(overrides or {})
    app = ClientApp()

    @app.train("grad")
    def grad(msg: Message, context: Context) -> Message:
        return handle_anchor(msg, context, overrides)

    @app.train("local")
    def local(msg: Message, context: Context) -> Message:
        return handle_local(msg, context, overrides)

    return app


app = make_client_app()

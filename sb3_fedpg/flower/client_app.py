"""
The Flower ClientApp: one Fast-FedPG agent per SuperNode.

Two message types, one per phase of the round: ``train.grad`` (reply with the anchor
``a_i = ĝ_i(θ̄)``) and ``train.local`` (reply with ``Δ_i = θ_{i,H} − θ̄``). The agent itself is
Flower-free (:mod:`sb3_fedpg.flower.phases`); this module only moves vectors between Flower
messages and the agent. In a deployment flwr 1.42 handles every message in a fresh process, so the
agent lives in a long-lived worker beside the SuperNode (:mod:`sb3_fedpg.flower.worker`, named by the
node config ``agent-worker``) and this process never imports torch. Without a worker (the simulation
engine, or a SuperNode started without one) the agent computes here and its memory (anchor, critic,
optimiser states) is kept in ``context.state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from sb3_fedpg.flower.agent import AgentState
from sb3_fedpg.flower.phases import REPLY_ARRAYS, PhaseRequest, answer

#: Message types of the two phases (``@app.train("grad")`` / ``@app.train("local")``).
PHASE_GRAD = "train.grad"
PHASE_LOCAL = "train.local"
#: Message type of the federated evaluation (``@app.evaluate()``).
PHASE_EVALUATE = "evaluate"
#: The one record of a server message: ``params`` (``θ̄``) and, in phase 2, ``global-grad`` (``g``) and, with
#: shared advantage normalisation, ``advantage-scale`` (``σ``, one number) and, with FederatedPPO's ``snr_damping``,
#: ``anchor-noise`` (the number of anchors in ``g`` and the sum of their noise), and with ``normalize-obs`` the merged
#: observation statistics (``obs-count``, ``obs-mean``, ``obs-m2``, ``obs-merged-round``).
MESSAGE_ARRAYS = "arrays"
#: Node config key naming the folder of the SuperNode's agent worker.
WORKER_KEY = "agent-worker"
#: Keys of the agent's memory in ``context.state``.
STATE_ARRAYS = "fedpg-agent"
STATE_META = "fedpg-agent-meta"


def _federation_noise(arrays: Any) -> tuple[int, float] | None:
    if "anchor-noise" not in arrays:
        return None
    count, total = arrays["anchor-noise"].numpy()
    return int(count), float(total)


def agent_identity(context: Context) -> tuple[int, int]:
    """
    Which agent this ClientApp is: ``partition-id`` / ``num-partitions`` from the node config
    (set by ``flower-supernode --node-config`` or by the simulation engine).

    :param context: the ClientApp's context
    :return: ``(agent index, number of agents)``
    """
    hint = 'start the SuperNode with --node-config "partition-id=<i> num-partitions=<N>" (integers, 0 <= i < N)'
    try:
        raw_agent, raw_n = context.node_config["partition-id"], context.node_config["num-partitions"]
    except KeyError as error:
        raise ValueError(f"the SuperNode has no agent identity: {hint}") from error
    try:
        agent, n_agents = int(raw_agent), int(raw_n)
    except (TypeError, ValueError) as error:
        raise ValueError(f"partition-id={raw_agent!r}, num-partitions={raw_n!r} are not integers: {hint}") from error
    if isinstance(raw_agent, float | bool) or isinstance(raw_n, float | bool) or n_agents < 1:
        raise ValueError(f"partition-id={raw_agent!r}, num-partitions={raw_n!r}: {hint}")
    if not 0 <= agent < n_agents:
        raise ValueError(f"partition-id={agent} is outside [0, num-partitions={n_agents})")
    return agent, n_agents


def _reply(msg: Message, key: str, vector: np.ndarray, metrics: Mapping[str, Any]) -> Message:
    metrics = dict(metrics)
    # Arrays sent along (an agent's observation delta) go next to the vector, in the same record.
    arrays = {name: Array(np.ascontiguousarray(value)) for name, value in metrics.pop(REPLY_ARRAYS, {}).items()}
    content = RecordDict(
        {key: ArrayRecord({key: Array(np.ascontiguousarray(vector)), **arrays}), "metrics": MetricRecord(metrics)}
    )
    return Message(content, reply_to=msg)


class ContextMemory:
    """
    The agent's memory in ``context.state`` (where it computes in the ClientApp's own process): the anchor and the
    round in one ``ArrayRecord``/``ConfigRecord`` pair, the critic and optimiser states as named arrays
    (:func:`~sb3_fedpg.flower.agent.flatten_state`) with their JSON skeleton.

    :param context: the ClientApp's context
    """

    def __init__(self, context: Context) -> None:
        self.context = context

    def load(self) -> tuple[AgentState | None, np.ndarray | None, int | None]:
        state = self.context.state
        if STATE_ARRAYS not in state.array_records:
            return None, None, None
        arrays = {name: array.numpy() for name, array in state.array_records[STATE_ARRAYS].items()}
        meta = state.config_records[STATE_META]
        anchor = arrays.pop("anchor")
        return (arrays, str(meta["skeleton"])), anchor, int(cast(int, meta["round"]))  # saved as an int by save()

    def save(self, agent: Any, anchor: np.ndarray, server_round: int) -> None:
        arrays, skeleton = agent.dump_state()
        if "anchor" in arrays:
            raise ValueError("an agent's state may not name an array 'anchor'")
        record = {name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()}
        record["anchor"] = Array(np.ascontiguousarray(anchor))
        self.context.state[STATE_ARRAYS] = ArrayRecord(record)
        self.context.state[STATE_META] = ConfigRecord({"round": server_round, "skeleton": skeleton})


def handle(msg: Message, context: Context, phase: str, overrides: Mapping[str, Any] | None = None) -> Message:
    """
    One phase on agent ``i``: read ``θ̄`` (and ``g``) from the message, get the reply from the agent — its long-lived
    worker when the node config names one (``agent-worker``), else computed here with the memory in ``context.state``
    — and send it back.

    :param msg: the server's message (``train.grad``: ``θ̄``; ``train.local``: ``θ̄`` and ``g``; the round is its
        group id)
    :param context: the ClientApp's context (run config, node config, state)
    :param phase: ``grad``, ``local`` or ``evaluate``
    :param overrides: run config entries that take precedence over ``context.run_config``
    :return: the reply: ``anchor`` (phase 1) or ``delta`` (phase 2), and ``metrics`` (only those for ``evaluate``)
    """
    agent, n_agents = agent_identity(context)
    arrays = msg.content.array_records[MESSAGE_ARRAYS]
    request = PhaseRequest(
        phase=phase,
        run_id=context.run_id,
        run_config={**context.run_config, **(overrides or {})},
        agent=agent,
        n_agents=n_agents,
        server_round=int(msg.metadata.group_id),
        params=arrays["params"].numpy(),
        global_grad=arrays["global-grad"].numpy() if "global-grad" in arrays else None,
        advantage_scale=float(arrays["advantage-scale"].numpy()[0]) if "advantage-scale" in arrays else None,
        federation_noise=_federation_noise(arrays),
        obs_stats={name: arrays[name].numpy() for name in arrays if name.startswith("obs-")} or None,
    )
    worker = context.node_config.get(WORKER_KEY)
    if worker:
        from sb3_fedpg.flower.config import parse_run_config
        from sb3_fedpg.flower.worker import request_worker

        # A worker that is (re)starting gets as long as the server waits for the phase.
        timeout = parse_run_config(request.run_config).phase_timeout_s
        vector, metrics = request_worker(str(worker), vars(request), timeout=timeout, connect_timeout=timeout)
    else:
        vector, metrics = answer(request, ContextMemory(context))
    if phase == "evaluate":
        metrics.pop(REPLY_ARRAYS, None)
        return Message(RecordDict({"metrics": MetricRecord(dict(metrics))}), reply_to=msg)
    return _reply(msg, "anchor" if phase == "grad" else "delta", vector, metrics)


def make_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """
    Build the ClientApp.

    :param overrides: kebab-case run config entries that take precedence over ``context.run_config``
        (used by :func:`sb3_fedpg.flower.simulation.run_simulation`, whose runs have no run config)
    :return: the ClientApp answering ``train.grad`` (anchor), ``train.local`` (local steps) and ``evaluate``
    """
    overrides = dict(overrides or {})
    app = ClientApp()

    @app.train("grad")
    def grad(msg: Message, context: Context) -> Message:
        return handle(msg, context, "grad", overrides)

    @app.train("local")
    def local(msg: Message, context: Context) -> Message:
        return handle(msg, context, "local", overrides)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle(msg, context, "evaluate", overrides)

    return app


app = make_client_app()

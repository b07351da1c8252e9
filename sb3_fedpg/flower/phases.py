"""
The agent's half of one phase, free of Flower and of any transport.

:func:`answer` turns a phase request (``θ̄``, ``g``, the round) into the reply vector and its metrics for agent
``i``. Where the agent's memory lives between the two phases is the caller's business (:class:`AgentMemory`): the
long-lived agent worker (:mod:`sb3_fedpg.flower.worker`) keeps it in its own process, a ClientApp that computes
in-process keeps it in ``context.state`` (:mod:`sb3_fedpg.flower.client_app`). Both call this one function, so a
deployment and a simulation compute the same thing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sb3_fedpg.common.adversarial import faulty_message
from sb3_fedpg.flower.agent import AgentState, get_agent, message_seed
from sb3_fedpg.flower.config import parse_run_config

#: The two phases of a round (Flower message types ``train.grad`` and ``train.local``) and the federated evaluation
#: of the global policy (``evaluate``).
PHASES = ("grad", "local", "evaluate")


@dataclass
class PhaseRequest:
    """
    What the server asks of agent ``i`` in one phase.

    :param phase: ``grad`` (reply ``a_i = ĝ_i(θ̄)``), ``local`` (reply ``Δ_i = θ_{i,H} − θ̄``) or ``evaluate`` (metrics only)
    :param run_id: the Flower run (agents of different runs never share memory)
    :param run_config: the run's kebab-case configuration
    :param agent: the agent's index (``partition-id``)
    :param n_agents: agents in the federation (``num-partitions``)
    :param server_round: the round (1-based)
    :param params: ``θ̄``
    :param global_grad: ``g`` (phase ``local`` only)
    :param advantage_scale: the round's shared advantage scale (phase ``local`` of a run that normalises ``shared``)
    :param federation_noise: the number of anchors in ``g`` and the sum of their noise (phase ``local`` of a
        FederatedPPO run with ``snr_damping``)
    :param obs_stats: with ``normalize-obs``, the server's merged observation statistics and each agent's last merged
        round (``obs-count``, ``obs-mean``, ``obs-m2``, ``obs-merged-round``), by name
    """

    phase: str
    run_id: Any
    run_config: Mapping[str, Any]
    agent: int
    n_agents: int
    server_round: int
    params: np.ndarray
    global_grad: np.ndarray | None = None
    advantage_scale: float | None = None
    federation_noise: tuple[int, float] | None = None
    obs_stats: dict[str, np.ndarray] | None = None


#: The metrics entry in which :func:`answer` hands back the arrays that travel with the reply besides its vector (an
#: agent's observation delta, ``obs-delta-count``/``-mean``/``-m2``); the transport moves them into the reply's arrays.
REPLY_ARRAYS = "reply-arrays"


class AgentMemory(Protocol):
    """Where an agent's memory lives between messages."""

    def load(self) -> tuple[AgentState | None, np.ndarray | None, int | None]:
        """:return: the agent's stored state (``None``: the agent object holds it), its anchor and the anchor's round"""
        ...

    def save(self, agent: Any, anchor: np.ndarray, server_round: int) -> None:
        """
        :param agent: the agent (its state is ``agent.dump_state()``)
        :param anchor: its anchor ``a_i`` of the round
        :param server_round: the round
        """
        ...


class InProcessMemory:
    """The memory of agents that live as long as their process (the agent worker): only the anchor is kept here."""

    def __init__(self) -> None:
        self.anchor: np.ndarray | None = None
        self.round: int | None = None

    def load(self) -> tuple[AgentState | None, np.ndarray | None, int | None]:
        return None, self.anchor, self.round

    def save(self, agent: Any, anchor: np.ndarray, server_round: int) -> None:
        self.anchor, self.round = anchor, server_round


def check_request_values(request: PhaseRequest) -> None:
    """
    Refuse a request whose numbers are not finite, before the agent computes anything or touches its memory: an
    agent handed a NaN ``θ̄`` would otherwise train on it and reply NaN.

    :param request: the phase request
    :raises ValueError: naming the non-finite field
    """
    fields: dict[str, Any] = {"global parameters θ̄": request.params, "global gradient g": request.global_grad}
    fields["advantage scale"] = request.advantage_scale
    fields["federation noise"] = request.federation_noise
    for key, array in (request.obs_stats or {}).items():
        fields[f"observation statistics {key!r}"] = array
    for name, value in fields.items():
        if value is None:
            continue
        values = np.asarray(value, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(
                f"agent {request.agent}: the server sent a non-finite {name} (NaN/inf) in round {request.server_round} "
                f"({request.phase}); the agent computed nothing and kept its state. Check the server: its checkpoint "
                "(resume from an earlier one) or a custom aggregator."
            )


def answer(request: PhaseRequest, memory: AgentMemory) -> tuple[np.ndarray, dict[str, Any]]:
    """
    Agent ``i``'s reply to one phase: the anchor (kept in ``memory`` for phase 2) or the parameter change.

    Every (agent, round, phase) reseeds the agent (:func:`~sb3_fedpg.flower.agent.message_seed`) and starts fresh
    episodes, so the reply does not depend on which process computes it.

    :param request: the phase request
    :param memory: where the agent's memory lives
    :return: the reply vector (after any configured fault injection; empty for ``evaluate``) and its metrics
        (``agent``, ``num-examples`` and the agent's own; arrays to send along under :data:`REPLY_ARRAYS`)
    """
    if request.phase not in PHASES:
        raise ValueError(f"unknown phase {request.phase!r}; expected one of {PHASES}")
    check_request_values(request)
    config = parse_run_config(request.run_config)
    agent = get_agent(config, request.run_id, request.agent, request.n_agents)
    state, anchor, anchor_round = memory.load()
    server_round = request.server_round
    if request.phase == "evaluate":  # the agent's memory is left as it is
        agent.begin(state, message_seed(config, request.agent, server_round, 3), request.obs_stats, False, server_round)
        evaluation = agent.evaluate(request.params)
        return np.zeros(0), {"agent": request.agent, "num-examples": int(evaluation.get("eval_episodes", 1)), **evaluation}
    if request.phase == "grad":
        agent.begin(state, message_seed(config, request.agent, server_round, 1), request.obs_stats, True, server_round)
        anchor = agent.anchor(request.params)
        vector = anchor
    else:
        if anchor is None:
            raise RuntimeError(f"agent {request.agent} has no anchor: it missed phase 1 of round {server_round}")
        if anchor_round != server_round:
            raise RuntimeError(f"agent {request.agent} holds the anchor of round {anchor_round}, not of round {server_round}")
        if request.global_grad is None:
            raise ValueError("a phase-2 request needs the global gradient g")
        agent.begin(state, message_seed(config, request.agent, server_round, 2), request.obs_stats, True, server_round)
        local = agent.local_round(
            request.params,
            anchor,
            request.global_grad,
            config.agent_learning_rate,
            request.advantage_scale,
            request.federation_noise,
        )
        vector = local - request.params
    # Remember the exact anchor (before any fault injection) for phase 2.
    memory.save(agent, anchor, server_round)
    if config.fault_applies(request.agent, request.phase, server_round):
        if config.fault_kind == "crash":  # a killed agent process, at a reproducible point (tests)
            os.kill(os.getpid(), signal.SIGKILL)
        vector = faulty_message(vector, config.fault_kind)
    metrics: dict[str, Any] = {"agent": request.agent, "num-examples": agent.num_examples(), **agent.metrics()}
    if agent.reply_arrays():
        metrics[REPLY_ARRAYS] = agent.reply_arrays()
    return vector, metrics

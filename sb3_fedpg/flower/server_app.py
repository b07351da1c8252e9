"""
The Flower ServerApp: the two-phase Fast-FedPG round over the connected agents.

:class:`FedPGServer` has one method per phase — :meth:`~FedPGServer.anchor_phase` (send ``θ̄``,
collect and validate the anchors, ``g`` by :func:`fedmath.server_global_gradient`) and
:meth:`~FedPGServer.local_phase` (send ``θ̄`` and ``g``, collect and validate ``Δ_i``, ``θ̄`` by
:func:`fedmath.server_new_params`) — and logs each round with :func:`fedmath.round_metrics`: the
server half of the round is the very code the in-process :class:`~sb3_fedpg.FederatedPG` runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from logging import INFO, WARNING
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from sb3_fedpg.flower.client_app import MESSAGE_ARRAYS, PHASE_EVALUATE, PHASE_GRAD, PHASE_LOCAL
from sb3_fedpg.flower.config import FlowerRunConfig, parse_run_config
from sb3_fedpg.flower.outputs import ServerOutputs

#: The metrics of an anchor reply that carry the agent's advantage moments (shared normalisation).
MOMENT_KEYS = ("adv-count", "adv-m2", "adv-groups")


def server_anchors(
    config: FlowerRunConfig, n_params: int, vectors: list[np.ndarray], metrics: list[Mapping[str, Any]]
) -> tuple[np.ndarray, float | None]:
    """
    The anchors of the accepted phase-1 replies: as sent, or — with shared advantage normalisation — assembled from
    their parts with the scale pooled from the agents' moments (:func:`fedmath.assemble_anchors`, as in-process).

    :param config: the run configuration
    :param n_params: ``p``
    :param vectors: the accepted replies' vectors, in agent order
    :param metrics: their metrics (with :data:`MOMENT_KEYS` under shared normalisation)
    :return: the anchors ``(n, p)`` and the round's advantage scale (``None``: not shared)
    """
    from sb3_fedpg.common import fedmath

    stacked = np.stack(vectors)
    if not config.shared_normalization:
        return stacked, None
    moments = np.array([[float(m[key]) for key in MOMENT_KEYS] for m in metrics])
    anchors, scale = fedmath.assemble_anchors(fedmath.ScaledAnchors.from_vector(stacked, n_params, moments))
    return anchors.astype(stacked.dtype), scale


def federation_noise(metrics: list[Mapping[str, Any]], advantage_scale: float | None) -> tuple[int, float] | None:
    """
    What an agent's SNR estimate needs from the others (FederatedPPO's ``snr_damping``): the number of anchors in
    ``g`` and the sum of their noise, in the anchors' units.

    :param metrics: the accepted anchor replies' metrics (``anchor-noise``: the agent's ``v_i`` before the scale)
    :param advantage_scale: the round's shared advantage scale (``None``: the anchors were sent whole)
    :return: ``(N, Σ_i v_i / σ²)``; ``None`` when a reply has no valid noise (no ``snr_damping``)
    """
    noises = [m.get("anchor-noise") for m in metrics]
    if not noises or not all(isinstance(v, int | float) and np.isfinite(v) and v >= 0 for v in noises):
        return None
    scale = advantage_scale or 1.0
    return len(noises), sum(float(cast(float, v)) for v in noises) / scale**2


def wait_for_agents(grid: Any, n_wanted: int, timeout: float) -> list[int]:
    """
    Wait until ``n_wanted`` SuperNodes are connected (``get_node_ids()`` is empty right after start).

    :param grid: the ServerApp's grid
    :param n_wanted: number of nodes to wait for
    :param timeout: seconds to wait at most
    :return: the connected node ids (possibly fewer than wanted after the timeout)
    """
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n_wanted or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.2)


def phase_messages(
    node_ids: Iterable[int], content: RecordDict, message_type: str, server_round: int, ttl: float
) -> list[Message]:
    """
    One phase's messages, the same content for every node; the round travels as the group id.

    :param node_ids: destination nodes
    :param content: the content
    :param message_type: ``train.grad`` or ``train.local``
    :param server_round: the round
    :param ttl: the messages' lifetime in seconds
    :return: the messages
    """
    # A message lives as long as the server waits for its reply (not Flower's 12-hour default): a SuperNode
    # that reconnects later does not work on a phase the server has already closed.
    return [
        Message(content=content, dst_node_id=node, message_type=message_type, group_id=str(server_round), ttl=ttl)
        for node in node_ids
    ]


def push_and_pull(grid: Any, messages: list[Message], timeout: float, poll_s: float) -> list[Message]:
    """
    Push the messages and pull their replies every ``poll_s`` seconds until all arrived or ``timeout`` passed.

    ``Grid.send_and_receive`` of flwr 1.42's deployment grid sleeps 3 s between pulls: a phase whose replies arrive
    after 0.5 s would still take 3 s. The public ``push_messages``/``pull_messages`` with a short poll cost a few
    cheap requests per second instead.

    :param grid: the ServerApp's grid
    :param messages: the messages (their ids are set by the push)
    :param timeout: seconds to wait for the replies
    :param poll_s: seconds between pulls
    :return: the replies that arrived in time
    """
    pending = {message_id for message_id in grid.push_messages(messages) if message_id}
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        arrived = list(grid.pull_messages(pending))
        replies += arrived
        pending -= {reply.metadata.reply_to_message_id for reply in arrived}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    return replies


def screen_replies(
    received: list[tuple[int, Any, Any]],
    key: str,
    n_params: int,
    max_norm: float | None,
    max_ratio: float | None,
    server_round: int = 0,
    message_type: str = "",
) -> tuple[dict[int, np.ndarray], dict[int, dict[str, Any]], dict[int, str]]:
    """
    Validate one phase's replies; never raises on what an agent sent.

    In order: the vector (:func:`~sb3_fedpg.common.validation.update_problem`: shape, dtype, finite, absolute norm),
    the metrics (:func:`~sb3_fedpg.common.validation.clean_metrics`: bad entries dropped and logged), one reply per
    agent id (a second node claiming an agent already claimed in this phase is rejected), and the relative norm bound
    (:func:`~sb3_fedpg.common.validation.relative_norm_outliers`) over the replies left.

    :param received: ``(node, vector, metrics)`` in arrival order
    :param key: ``anchor`` or ``delta`` (for the messages)
    :param n_params: expected vector length
    :param max_norm: absolute norm bound (``None``: none)
    :param max_ratio: relative bound: at most this many times the phase's median norm (``None``: none)
    :param server_round: the round (for the log)
    :param message_type: the phase (for the log)
    :return: accepted vectors and clean metrics by node, and the reasons of the rejected nodes
    """
    from sb3_fedpg.common.validation import clean_metrics, relative_norm_outliers, update_problem

    accepted: dict[int, np.ndarray] = {}
    metrics: dict[int, dict[str, Any]] = {}
    problems: dict[int, str] = {}
    claimed: dict[float, int] = {}  # agent id (an int, typed as a metric value) -> node
    for node, vector, record in received:
        problem = update_problem(vector, n_params, max_norm)
        if problem is not None:
            problems[node] = f"rejected {key}: {problem}"
            continue
        clean, dropped = clean_metrics(record)
        for note in dropped:
            log(WARNING, "round %d %s: node %d: metric dropped: %s", server_round, message_type, node, note)
        agent = clean.get("agent")
        if agent is not None and agent in claimed:
            problems[node] = f"rejected {key}: agent id {agent} was already claimed by node {claimed[agent]} in this phase"
            continue
        if agent is not None:
            claimed[int(agent)] = node
        accepted[node] = np.asarray(vector)
        metrics[node] = clean
    for node, problem in relative_norm_outliers(accepted, max_ratio).items():
        problems[node] = f"rejected {key}: {problem}"
        del accepted[node], metrics[node]
    return accepted, metrics, problems


class FedPGServer:
    """
    The server of one Flower run.

    :param grid: the ServerApp's grid
    :param config: the run configuration
    """

    def __init__(self, grid: Any, config: FlowerRunConfig) -> None:
        from sb3_fedpg.common.aggregators import make_aggregator

        self.grid = grid
        self.config = config
        self.aggregator = make_aggregator(config.aggregator)  # the same rules as FederatedPG(aggregator=...)
        self.agent_of: dict[int, int] = {}
        #: the arrays of the last phase's accepted replies besides their vector (an agent's observation delta)
        self.reply_arrays: dict[int, dict[str, np.ndarray]] = {}
        #: ``normalize-obs``: the merged observation statistics ``(count, mean, M2)`` by key, and per agent the last
        #: round whose delta was merged (-1: none); set by :meth:`start_obs_statistics`
        self.obs_moments: dict[str, Any] | None = None
        self.obs_merged_round = np.zeros(0)

    def start_obs_statistics(self, moments: dict[str, Any], n_agents: int) -> None:
        """
        Federated observation normalisation: start from the agents' initial statistics (SB3's ``RunningMeanStd``
        prior, the same on every agent).

        :param moments: ``(count, mean, M2)`` by key (``""`` for a ``Box`` space)
        :param n_agents: agents in the federation
        """
        self.obs_moments = dict(moments)
        self.obs_merged_round = np.full(max(n_agents, 1), -1.0)

    def obs_arrays(self) -> dict[str, Array]:
        """:return: what every message carries with ``normalize-obs``: the merged statistics, each agent's last merged round"""
        from sb3_fedpg.common.vec_normalize import moments_to_arrays

        if self.obs_moments is None:
            return {}
        arrays = moments_to_arrays(self.obs_moments, "obs")
        arrays["obs-merged-round"] = self.obs_merged_round.copy()
        return {name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()}

    def merge_obs_deltas(self, nodes: list[int], metrics: Mapping[int, Mapping[str, Any]], server_round: int) -> list[int]:
        """
        The server's half of federated observation normalisation: merge the accepted phase-2 replies' observation
        deltas into the global statistics (:func:`fedmath.merge_running_moments`, as in-process) and record, per
        agent, that its delta of this round is merged (the agent clears it when the next message says so). A reply
        without valid statistics is left out of the merge and logged; that agent keeps its delta and sends it again.

        :param nodes: the accepted replies' nodes, in agent order
        :param metrics: their metrics (``agent``: the agent's id)
        :param server_round: the round
        :return: the agents whose deltas were merged
        """
        from sb3_fedpg.common import fedmath
        from sb3_fedpg.common.vec_normalize import moments_from_arrays

        if self.obs_moments is None:
            return []
        deltas, merged = [], []
        for node in nodes:
            agent = metrics.get(node, {}).get("agent")
            moments, problem = moments_from_arrays(self.reply_arrays.get(node, {}), self.obs_moments, "obs-delta")
            if moments is None or agent is None:
                problem = problem or "no agent id"
                log(
                    WARNING, "round %d: node %d: observation statistics left out of the merge: %s", server_round, node, problem
                )
                continue
            deltas.append(moments)
            merged.append(int(agent))
        self.obs_moments = {
            key: fedmath.merge_running_moments([value] + [delta[key] for delta in deltas])
            for key, value in self.obs_moments.items()
        }
        if merged and max(merged) >= len(self.obs_merged_round):
            grown = np.full(max(merged) + 1, -1.0)
            grown[: len(self.obs_merged_round)] = self.obs_merged_round
            self.obs_merged_round = grown
        self.obs_merged_round[merged] = server_round
        return merged

    def exchange(
        self, node_ids: Iterable[int], content: RecordDict, message_type: str, server_round: int, key: str, n_params: int
    ) -> tuple[dict[int, np.ndarray], dict[int, dict[str, Any]], dict[int, str]]:
        """
        Send one phase's message to the nodes, wait (at most the phase timeout) and validate the replies.

        :param node_ids: destination nodes
        :param content: the message content (the same for all nodes)
        :param message_type: ``train.grad`` or ``train.local``
        :param server_round: round number (the messages' group id)
        :param key: the reply's vector name (``anchor`` or ``delta``)
        :param n_params: expected vector length
        :return: accepted vectors and (clean) metrics by node id, and the reasons of the rejected or missing nodes
        """

        config = self.config
        messages = phase_messages(node_ids, content, message_type, server_round, config.phase_timeout_s)
        replies = push_and_pull(self.grid, messages, config.phase_timeout_s, config.reply_poll_s)
        # Match replies by reply_to_message_id: an error reply may name the SuperLink as its source.
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        received: list[tuple[int, Any, Any]] = []
        problems: dict[int, str] = {}
        arrays_of: dict[int, dict[str, np.ndarray]] = {}
        for reply in replies:
            node = node_of.get(reply.metadata.reply_to_message_id)
            if node is None or node in problems or any(node == seen for seen, _, _ in received):
                continue  # unknown, or a second reply of the same node
            if reply.has_error():
                problems[node] = f"error reply (code {reply.error.code}): {reply.error.reason}"
                continue
            try:
                vector = cast(ArrayRecord, reply.content[key])[key].numpy()  # another record type: AttributeError
                records = reply.content.metric_records
                record = records["metrics"] if "metrics" in records else {}
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                problems[node] = f"malformed reply ({type(error).__name__}: {error})"
                continue
            received.append((node, vector, record))
            extra = cast(ArrayRecord, reply.content[key])
            arrays_of[node] = {name: extra[name].numpy() for name in extra if name != key}
        accepted, metrics, screened = screen_replies(
            received, key, n_params, config.max_update_norm, config.max_update_norm_ratio, server_round, message_type
        )
        problems.update(screened)
        self.reply_arrays = {node: arrays_of.get(node, {}) for node in accepted}
        for node in node_of.values():
            if node not in accepted and node not in problems:
                problems[node] = f"no reply within {config.phase_timeout_s:g} s"
        for node, problem in sorted(problems.items()):
            log(WARNING, "round %d %s: node %d left out: %s", server_round, message_type, node, problem)
        return accepted, metrics, problems

    def _in_agent_order(self, nodes: Iterable[int]) -> list[int]:
        # Average in agent order (not by random node id) so runs are reproducible to the last bit.
        return sorted(nodes, key=lambda n: (self.agent_of.get(n, n), n))

    def anchor_phase(self, nodes: list[int], params: np.ndarray, server_round: int) -> dict[str, Any]:
        """
        Phase 1: every node's anchor at ``θ̄``; ``g`` over the accepted ones.

        :param nodes: the connected nodes
        :param params: ``θ̄``
        :param server_round: the round
        :return: ``nodes`` (accepted, in agent order), ``anchors`` (stacked), ``global_grad`` (``None`` when fewer
            than ``min-agents`` were accepted), ``metrics``, ``problems``
        """
        from sb3_fedpg.common import fedmath

        content = RecordDict({MESSAGE_ARRAYS: ArrayRecord({"params": Array(params), **self.obs_arrays()})})
        length = self.config.anchor_length(params.shape[0])
        anchors, metrics, problems = self.exchange(nodes, content, PHASE_GRAD, server_round, "anchor", length)
        self.agent_of.update({node: int(m.get("agent", node)) for node, m in metrics.items()})
        if self.config.shared_normalization:  # each anchor comes in parts, with its agent's advantage moments
            for node in list(anchors):
                row = [metrics[node].get(key) for key in MOMENT_KEYS]
                if not all(isinstance(x, int | float) and np.isfinite(x) and x >= 0 for x in row):
                    problems[node] = f"anchor reply without valid advantage moments {MOMENT_KEYS} (got {row})"
                    log(WARNING, "round %d %s: node %d left out: %s", server_round, PHASE_GRAD, node, problems[node])
                    del anchors[node]
        accepted = self._in_agent_order(anchors)
        out: dict[str, Any] = {
            "nodes": accepted,
            "anchors": None,
            "global_grad": None,
            "advantage_scale": None,
            "federation_noise": None,
            "metrics": metrics,
            "problems": problems,
        }
        if len(accepted) >= self.config.min_agents:
            out["anchors"], out["advantage_scale"] = server_anchors(
                self.config, params.shape[0], [anchors[n] for n in accepted], [metrics[n] for n in accepted]
            )
            out["federation_noise"] = federation_noise([metrics[n] for n in accepted], out["advantage_scale"])
            out["global_grad"] = fedmath.server_global_gradient(out["anchors"], self.aggregator)
        return out

    def local_phase(
        self,
        nodes: list[int],
        params: np.ndarray,
        global_grad: Any,
        server_round: int,
        advantage_scale: float | None = None,
        federation_noise: tuple[int, float] | None = None,
    ) -> dict[str, Any]:
        """
        Phase 2: the local rounds of the agents whose anchor is part of ``g``; the new ``θ̄``.

        :param nodes: the agents of phase 1 (in agent order)
        :param params: ``θ̄``
        :param global_grad: ``g``
        :param server_round: the round
        :param advantage_scale: the round's shared advantage scale (sent along when not ``None``)
        :param federation_noise: the number of anchors in ``g`` and the sum of their noise (sent along when not
            ``None``)
        :return: ``nodes`` (accepted, in agent order), ``local_params`` (stacked ``θ̄ + Δ_i``), ``params`` (the new
            ``θ̄``; ``None`` when fewer than ``min-agents`` were accepted), ``metrics``, ``problems``
        """
        from sb3_fedpg.common import fedmath

        config = self.config
        # One record per message (each record and array is one more object to push and pull in a deployment).
        arrays = {"params": Array(params), "global-grad": Array(np.asarray(global_grad, dtype=params.dtype))}
        if advantage_scale is not None:
            arrays["advantage-scale"] = Array(np.array([advantage_scale], dtype=np.float64))
        if federation_noise is not None:
            arrays["anchor-noise"] = Array(np.array(federation_noise, dtype=np.float64))
        content = RecordDict({MESSAGE_ARRAYS: ArrayRecord({**arrays, **self.obs_arrays()})})
        deltas, metrics, problems = self.exchange(nodes, content, PHASE_LOCAL, server_round, "delta", params.shape[0])
        accepted = self._in_agent_order(deltas)
        # Observations were seen whether or not the round completes: every accepted reply's delta is merged.
        self.merge_obs_deltas(accepted, metrics, server_round)
        out: dict[str, Any] = {
            "nodes": accepted,
            "local_params": None,
            "params": None,
            "metrics": metrics,
            "problems": problems,
        }
        if len(accepted) >= config.min_agents:
            out["local_params"] = params + np.stack([deltas[n] for n in accepted])
            new = fedmath.server_new_params(params, out["local_params"], config.server_step_size, self.aggregator)
            out["params"] = np.asarray(new, dtype=params.dtype)
        return out

    def evaluate_phase(self, nodes: list[int], params: np.ndarray, server_round: int) -> dict[str, Any]:
        """
        Federated evaluation: every node's return of the global policy under its own reward (``@app.evaluate``).

        :param nodes: the nodes to ask
        :param params: ``θ̄``
        :param server_round: the round
        :return: ``returns`` (agent id → ``eval_return``), ``mean_return`` (over agents; ``None`` without replies),
            ``num_examples`` (episodes, summed), ``problems`` (node → reason)
        """
        from sb3_fedpg.common.validation import clean_metrics

        config = self.config
        content = RecordDict({MESSAGE_ARRAYS: ArrayRecord({"params": Array(params), **self.obs_arrays()})})
        messages = phase_messages(nodes, content, PHASE_EVALUATE, server_round, config.phase_timeout_s)
        replies = push_and_pull(self.grid, messages, config.phase_timeout_s, config.reply_poll_s)
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}  # ids are set by the push
        returns: dict[int, float] = {}
        problems: dict[int, str] = {}
        answered: list[int] = []
        examples = 0
        for reply in replies:
            node = node_of.get(reply.metadata.reply_to_message_id)
            if node is None:
                continue
            if reply.has_error():
                problems[node] = f"error reply (code {reply.error.code}): {reply.error.reason}"
                continue
            records = reply.content.metric_records
            clean, _ = clean_metrics(records["metrics"] if "metrics" in records else {})
            agent, value = clean.get("agent"), clean.get("eval_return")
            if agent is None or value is None or agent in returns:
                problems[node] = "evaluation reply without a valid (or with an already claimed) agent id and eval_return"
                continue
            returns[int(agent)] = float(value)
            answered.append(node)
            examples += int(clean.get("num-examples", 0))
        for node in node_of.values():
            if node not in problems and not any(node == n for n in answered):
                problems[node] = f"no reply within {config.phase_timeout_s:g} s"
        for node, problem in sorted(problems.items()):
            log(WARNING, "round %d evaluate: node %d left out: %s", server_round, node, problem)
        mean = float(np.mean(list(returns.values()))) if returns else None
        log(
            INFO,
            "round %d evaluate: %d agents, mean return %s",
            server_round,
            len(returns),
            "n/a" if mean is None else f"{mean:.4g}",
        )
        return {"returns": dict(sorted(returns.items())), "mean_return": mean, "num_examples": examples, "problems": problems}

    def log_round(self, logger: Any, server_round: int, result: Any, phase1: dict[str, Any], phase2: dict[str, Any]) -> None:
        """
        Record the round with the in-process algorithm's metric names (:func:`fedmath.round_metrics`) and
        the agents' reported returns.

        :param logger: the SB3 logger
        :param server_round: the round
        :param result: the round's :class:`~sb3_fedpg.common.fedmath.RoundResult`
        :param phase1: output of :meth:`anchor_phase`
        :param phase2: output of :meth:`local_phase`
        """
        from sb3_fedpg.common import fedmath

        values = fedmath.round_metrics(result, self.config.uses_correction)
        for key, value in values.items():
            logger.record(key, value)
        logger.record("fed/round", server_round)
        logger.record("fed/agents_phase1", len(phase1["nodes"]))
        logger.record("fed/agents_phase2", len(phase2["nodes"]))
        logger.record("train/learning_rate", self.config.agent_learning_rate)
        records = list(phase1["metrics"].values()) + list(phase2["metrics"].values())
        returns = []
        for record in records:
            if "ep_rew_mean" in record:
                returns.append(float(record["ep_rew_mean"]))
                logger.record(f"fed/agent_{int(record['agent'])}/ep_rew_mean", float(record["ep_rew_mean"]))
        if returns:
            logger.record("rollout/ep_rew_mean", float(np.mean(returns)))
        logger.record("time/round_timesteps", sum(float(r.get("num_timesteps", 0.0)) for r in records))
        # One line per round in the ServerApp's log (what `flwr log <run-id>` shows).
        log(
            INFO,
            "round %d/%d: %d anchors, %d changes averaged; ep_rew_mean %s, drift %.4g, |g| %.4g",
            server_round,
            self.config.num_rounds,
            len(phase1["nodes"]),
            len(phase2["nodes"]),
            f"{np.mean(returns):.2f}" if returns else "n/a",
            values.get("fed/drift", float("nan")),
            values.get("train/policy_gradient_norm", float("nan")),
        )
        logger.dump(step=server_round)

    def run(self) -> list[np.ndarray]:
        """
        ``num-rounds`` two-phase rounds. Partial participation: ``g`` averages the anchors accepted in phase 1;
        only those agents get phase 2; ``θ̄`` moves by the aggregated change of the agents accepted in phase 2.
        A phase with fewer than ``min-agents`` accepted replies skips the round (``θ̄`` unchanged).

        :return: the global parameters after every round, ``[θ̄_0, …, θ̄_T]``
        """

        config, grid = self.config, self.grid
        n_wanted = max(config.num_agents, config.min_agents)
        nodes = wait_for_agents(grid, n_wanted, config.wait_for_agents_s)
        if len(nodes) < config.min_agents:
            raise RuntimeError(f"only {len(nodes)} agent(s) connected within {config.wait_for_agents_s:g} s, need {n_wanted}")
        outputs = ServerOutputs(config, max(config.num_agents, len(nodes)))  # claims output-dir for this run
        try:
            return self._run_rounds(outputs, nodes)
        finally:
            outputs.close()

    def _run_rounds(self, outputs: ServerOutputs, nodes: list[int]) -> list[np.ndarray]:
        """
        :param outputs: where the run's files go
        :param nodes: the agents connected at the start
        :return: see :meth:`run`
        """
        from sb3_fedpg.common import fedmath

        config, grid = self.config, self.grid
        if config.normalize_obs:
            self.start_obs_statistics(outputs.initial_obs_moments(), max(config.num_agents, len(nodes)))
        params = outputs.initial_params()
        history = [params]
        start_round = 0
        if config.resume and (saved := outputs.load_checkpoint()) is not None:
            params, history, start_round = saved
            log(INFO, "resuming from %s after round %d", outputs.checkpoint_path, start_round)
        name = {"fedpg": "Fast-FedPG" if config.correction else "FedAvg-PG", "fedppo": "FederatedPPO"}[config.algorithm]
        log(INFO, "%s on Flower: %d agents, %d parameters, %d rounds", name, len(nodes), params.shape[0], config.num_rounds)
        skipped_in_a_row = 0
        for server_round in range(start_round + 1, config.num_rounds + 1):
            t0 = time.perf_counter()
            nodes = sorted(grid.get_node_ids())
            summary: dict[str, Any] = {"round": server_round, "nodes": len(nodes)}
            phase1 = self.anchor_phase(nodes, params, server_round)
            t1 = time.perf_counter()
            phase2: dict[str, Any] = {"nodes": [], "params": None, "metrics": {}, "problems": {}}
            if phase1["global_grad"] is not None:
                phase2 = self.local_phase(
                    phase1["nodes"],
                    params,
                    phase1["global_grad"],
                    server_round,
                    phase1["advantage_scale"],
                    phase1["federation_noise"],
                )
            t2 = time.perf_counter()
            summary.update(
                phase1_agents=len(phase1["nodes"]),
                phase1_rejected={str(k): v for k, v in phase1["problems"].items()},
                phase2_agents=len(phase2["nodes"]),
                phase2_rejected={str(k): v for k, v in phase2["problems"].items()},
            )
            if phase2["params"] is not None:
                result = fedmath.RoundResult(
                    params=phase2["params"],
                    anchor_grads=phase1["anchors"],
                    global_grad=phase1["global_grad"],
                    local_params=phase2["local_params"],
                    params_before=params,
                    advantage_scale=phase1["advantage_scale"],
                )
                params = phase2["params"]
                skipped_in_a_row = 0
                if config.eval_every and (server_round % config.eval_every == 0 or server_round == config.num_rounds):
                    t_eval = time.perf_counter()
                    evaluation = self.evaluate_phase(nodes, params, server_round)
                    summary.update(eval_returns={str(k): v for k, v in evaluation["returns"].items()})
                    summary.update(eval_s=time.perf_counter() - t_eval)
                    if evaluation["mean_return"] is not None:
                        outputs.logger.record("eval/mean_return", evaluation["mean_return"])
                        outputs.logger.record("eval/num_examples", evaluation["num_examples"])
                        for agent, value in evaluation["returns"].items():
                            outputs.logger.record(f"eval/agent_{agent}/return", value)
                self.log_round(outputs.logger, server_round, result, phase1, phase2)
            else:
                skipped_in_a_row += 1
                summary["skipped"] = True
                log(
                    WARNING,
                    "round %d skipped: %d anchors and %d changes accepted, min-agents is %d (global policy unchanged)",
                    server_round,
                    len(phase1["nodes"]),
                    len(phase2["nodes"]),
                    config.min_agents,
                )
            history.append(params)
            summary.update(phase1_s=t1 - t0, phase2_s=t2 - t1, round_s=time.perf_counter() - t0)
            outputs.save(params, history, server_round, self.obs_moments)
            outputs.record_round(summary)
            if skipped_in_a_row >= config.max_skipped_rounds:
                log(WARNING, "stopping: %d rounds in a row were skipped", skipped_in_a_row)
                break
        log(INFO, "done: global policy saved to %s", outputs.model_path)
        return history


def run_server(grid: Any, context: Context, overrides: Mapping[str, Any] | None = None) -> list[np.ndarray]:
    """
    The ServerApp's main loop (see :meth:`FedPGServer.run`).

    :param grid: the ServerApp's grid
    :param context: the ServerApp's context (``run_config`` holds the kebab-case settings)
    :param overrides: run config entries that take precedence over ``context.run_config``
    :return: the global parameters after every round, ``[θ̄_0, …, θ̄_T]``
    """
    return FedPGServer(grid, parse_run_config({**context.run_config, **(overrides or {})})).run()


def make_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """
    Build the ServerApp.

    :param overrides: kebab-case run config entries that take precedence over ``context.run_config``
    :return: the ServerApp running ``num-rounds`` Fast-FedPG rounds
    """
    overrides = dict(overrides or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, overrides)

    return app


app = make_server_app()

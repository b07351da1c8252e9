"""
The Fast-FedPG correction and aggregation math, in one place.

Everything the server and the agents compute in a communication round lives here,
as pure functions over stacked parameter arrays of shape ``(n_agents, n_params)``.
They accept NumPy arrays (tabular exact runs, Flower messages) and PyTorch tensors
(the neural in-process algorithm) alike, so the in-process ``FederatedPG``, the
exact tabular runs and the Flower server/client apps all call the very same code.

One round of Fast-FedPG (Zhu, Heath, Mitra, arXiv 2409.05291), with ``θ̄`` the
global parameters, ``ĝ_i`` agent ``i``'s local policy-gradient estimate, ``η`` the
local step size and ``H`` the number of local steps:

1. anchors ``a_i = ĝ_i(θ̄)``; server average ``g = mean_i a_i``
   (:func:`average_anchor_gradients`);
2. local steps ``d_{i,ℓ} = ĝ_i(θ_{i,ℓ}) − a_i + g``, ``θ_{i,ℓ+1} = θ_{i,ℓ} + η d_{i,ℓ}``
   (:func:`corrected_direction`, :func:`run_local_steps`);
3. ``θ̄ ← θ̄ + η_g · mean_i (θ_{i,H} − θ̄)`` (:func:`aggregate_parameter_changes`).

With ``correction=False`` the same code is FedAvg-PG. The round itself is :func:`run_round`:
its agent half is a :class:`LocalSolver` (the paper's :class:`CorrectedGradientSteps` by
default), its server half :func:`server_global_gradient` and :func:`server_new_params`, which
the Flower server calls as well; :func:`round_metrics` gives the ``fed/`` metrics of both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import torch as th

from sb3_fedpg.common.hyperparams import VARIANCE_CONTROLS

ArrayT = TypeVar("ArrayT", np.ndarray, th.Tensor)

#: Reduces stacked per-agent vectors ``(n, p)`` to one vector ``(p,)`` (mean by default;
#: robust aggregators plug in here).
Aggregator = Callable[[Any], Any]


class GradientOracle(Protocol):
    """
    Per-agent policy-gradient estimates at stacked parameters.

    Called with parameters of shape ``(n_agents, n_params)`` and the local step index
    (``-1`` for the anchor batch at ``θ̄``), returns ``(n_agents, n_params)`` ascent
    directions: row ``i`` is ``ĝ_i`` evaluated at row ``i`` of the parameters.
    """

    def __call__(self, params: Any, step: int, /) -> Any: ...


#: Applies a (corrected) direction to stacked local parameters, returns the new parameters.
LocalUpdate = Callable[[Any, Any, int], Any]


def mean_aggregate(stacked: ArrayT) -> ArrayT:
    """
    Plain average over agents (axis 0), the paper's server rule.

    :param stacked: per-agent vectors of shape ``(n, p)``
    :return: their mean, shape ``(p,)``
    """
    return stacked.mean(0)


def row_norms(stacked: ArrayT) -> ArrayT:
    """
    Euclidean norm of each row.

    :param stacked: per-agent vectors of shape ``(n, p)``
    :return: the ``n`` norms
    """
    if isinstance(stacked, th.Tensor):
        return th.linalg.vector_norm(stacked, dim=1)
    return np.linalg.norm(stacked, axis=1)


def broadcast_to_agents(params: ArrayT, n_agents: int) -> ArrayT:
    """
    Give every agent its own (writable) copy of the global parameters.

    :param params: global parameters ``(p,)``
    :param n_agents: number of agents
    :return: stacked copies ``(n_agents, p)``
    """
    if isinstance(params, th.Tensor):
        return params.unsqueeze(0).repeat(n_agents, 1)
    return np.repeat(params[None], n_agents, axis=0)


def nonfinite_rows(x: th.Tensor) -> list[int]:
    """
    The rows (agents) of ``x`` holding NaN or inf, checked at the cost of one sum when there are none: a NaN or inf
    anywhere makes the sum NaN or inf, and only then (or when a finite sum overflows) is every element checked. The
    per-element check over every agent's state after every local step was a fifth of a round at 256 agents.

    :param x: ``(n, ...)``, floating point
    :return: the rows with a non-finite entry, in order (empty: all finite)
    """
    if bool(th.isfinite(x.sum())):
        return []
    finite = th.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    return th.nonzero(~finite).flatten().tolist()


def checked_aggregate(aggregator: Aggregator, stacked: ArrayT, what: str = "vectors") -> ArrayT:
    """
    Apply an aggregator and hold it to its contract, so that a faulty custom aggregator is named as the culprit
    instead of surfacing later as the agents' non-finite values or a type error deep in the round.

    :param aggregator: the reduction over agents
    :param stacked: the agents' vectors ``(n, p)``
    :param what: what is aggregated (for the message)
    :return: the aggregate ``(p,)``, of the same array type, dtype and device as ``stacked``
    :raises TypeError: if the aggregator returns another array type or shape
    :raises FloatingPointError: if it turns finite inputs into non-finite values
    """
    out = aggregator(stacked)
    name = getattr(aggregator, "__name__", type(aggregator).__name__)
    expected = "torch.Tensor" if isinstance(stacked, th.Tensor) else "numpy.ndarray"
    if not isinstance(out, type(stacked)):
        raise TypeError(
            f"the aggregator {name!r} returned a {type(out).__module__}.{type(out).__name__} for the agents' {what}; "
            f"an aggregator must return the same array type it is given (here a {expected} of shape "
            f"{tuple(stacked.shape[1:])})."
        )
    if tuple(out.shape) != tuple(stacked.shape[1:]):
        raise TypeError(
            f"the aggregator {name!r} returned shape {tuple(out.shape)} for the agents' {what} of shape "
            f"{tuple(stacked.shape)}; it must reduce over the agents (axis 0) to shape {tuple(stacked.shape[1:])}."
        )
    finite_out = bool(th.isfinite(out).all()) if isinstance(out, th.Tensor) else bool(np.isfinite(out).all())
    if not finite_out:
        finite_in = bool(th.isfinite(stacked).all()) if isinstance(stacked, th.Tensor) else bool(np.isfinite(stacked).all())
        if finite_in:
            raise FloatingPointError(
                f"the aggregator {name!r} returned non-finite values (NaN/inf) from the agents' finite {what}: the "
                "aggregator is at fault, not the agents; fix it (or use a built-in one)."
            )
    return out


def average_anchor_gradients(anchor_grads: ArrayT, aggregator: Aggregator = mean_aggregate) -> ArrayT:
    """
    Phase 1 on the server: ``g = (1/N) Σ_i a_i`` over the agents that answered.

    :param anchor_grads: anchors ``a_i = ĝ_i(θ̄)``, shape ``(n, p)``
    :param aggregator: reduction over agents (mean by default; held to its contract by :func:`checked_aggregate`)
    :return: the global gradient estimate ``g``, shape ``(p,)``
    """
    return checked_aggregate(aggregator, anchor_grads, "anchors")


def corrected_direction(local_grads: ArrayT, anchor_grads: ArrayT, global_grad: ArrayT, correction: bool = True) -> ArrayT:
    """
    The memory-based drift correction ``d_i = ĝ_i(θ_i) − a_i + g``.

    The term ``g − a_i`` replaces agent ``i``'s own view of the gradient at ``θ̄`` by the
    global one, so local steps follow the average objective instead of drifting to the
    agent's own optimum. Without correction this is ``ĝ_i(θ_i)`` (FedAvg-PG).

    :param local_grads: ``ĝ_i(θ_{i,ℓ})``, shape ``(n, p)``
    :param anchor_grads: ``a_i``, shape ``(n, p)``
    :param global_grad: ``g``, shape ``(p,)``
    :param correction: apply the correction (Fast-FedPG) or not (FedAvg-PG)
    :return: directions ``d_i``, shape ``(n, p)``
    """
    if not correction:
        return local_grads
    return local_grads - anchor_grads + global_grad


def correction_norms(anchor_grads: ArrayT, global_grad: ArrayT) -> ArrayT:
    """
    ``‖g − a_i‖`` for each agent: how far each agent's anchor is from the consensus.

    :param anchor_grads: ``a_i``, shape ``(n, p)``
    :param global_grad: ``g``, shape ``(p,)``
    :return: the ``n`` norms
    """
    return row_norms(global_grad - anchor_grads)


def gradient_step(learning_rate: float) -> LocalUpdate:
    """
    Plain gradient ascent ``θ ← θ + η d``, the update the paper analyses.

    :param learning_rate: local step size ``η``
    :return: a :data:`LocalUpdate`
    """

    def _step(params: Any, direction: Any, step: int) -> Any:
        return params + learning_rate * direction

    return _step


def run_local_steps(
    global_params: ArrayT,
    anchor_grads: ArrayT,
    global_grad: ArrayT,
    grad_fn: GradientOracle,
    local_steps: int,
    local_update: LocalUpdate,
    correction: bool = True,
    reuse_anchor: bool = True,
) -> ArrayT:
    """
    Phase 2 on the agents: ``H`` corrected local steps from ``θ̄``.

    Works for any number of agents, one (a Flower client) or all of them (in-process).

    :param global_params: ``θ̄``, shape ``(p,)``
    :param anchor_grads: ``a_i``, shape ``(n, p)`` (its rows say how many agents step)
    :param global_grad: ``g``, shape ``(p,)``
    :param grad_fn: the agents' gradient oracle
    :param local_steps: ``H``
    :param local_update: how a direction moves the parameters (e.g. :func:`gradient_step`)
    :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
    :param reuse_anchor: at ``ℓ = 0`` use the anchor batch instead of a fresh one
        (``θ_{i,0} = θ̄`` so ``a_i`` is already ``ĝ_i(θ_{i,0})``; with correction this
        makes ``d_{i,0} = g`` exactly and saves one batch per round)
    :return: final local parameters ``θ_{i,H}``, shape ``(n, p)``
    """
    params = broadcast_to_agents(global_params, anchor_grads.shape[0])
    for step in range(local_steps):
        local_grads = anchor_grads if (step == 0 and reuse_anchor) else grad_fn(params, step)
        direction = corrected_direction(local_grads, anchor_grads, global_grad, correction)
        params = local_update(params, direction, step)
    return params


def aggregate_parameter_changes(
    global_params: ArrayT, local_params: ArrayT, server_learning_rate: float = 1.0, aggregator: Aggregator = mean_aggregate
) -> ArrayT:
    """
    Phase 3 on the server: ``θ̄ ← θ̄ + η_g · mean_i Δ_i`` with ``Δ_i = θ_{i,H} − θ̄``.

    :param global_params: ``θ̄``, shape ``(p,)``
    :param local_params: ``θ_{i,H}``, shape ``(n, p)``
    :param server_learning_rate: ``η_g`` (1 recovers plain averaging of the local models)
    :param aggregator: reduction over agents (mean by default)
    :return: the new global parameters, shape ``(p,)``
    """
    change = checked_aggregate(aggregator, local_params - global_params, "parameter changes")
    return global_params + server_learning_rate * change


@dataclass
class RoundResult:
    """
    What one communication round produced.

    :param params: new global parameters ``θ̄_{t+1}``
    :param anchor_grads: the anchors ``a_i`` of the round (all agents that computed one)
    :param global_grad: the aggregate ``g`` of the participants' anchors
    :param local_params: the agents' final local parameters ``θ_{i,H}``
    :param params_before: the global parameters ``θ̄_t`` the round started from
    :param participants: boolean mask of the agents that were averaged (``None``: all)
    :param advantage_scale: the round's shared advantage scale ``σ`` (``None``: not normalised ``"shared"``)
    """

    params: Any
    anchor_grads: Any
    global_grad: Any
    local_params: Any
    params_before: Any
    participants: Any = None
    advantage_scale: float | None = None

    def _rows(self, stacked: Any) -> Any:
        return stacked if self.participants is None else stacked[self.participants]

    @property
    def n_participants(self) -> int:
        """Number of agents averaged this round."""
        return int(self.local_params.shape[0] if self.participants is None else self.participants.sum())

    @property
    def drift(self) -> float:
        """Mean over participants of ``‖θ_{i,H} − θ̄_t‖`` (how far local models wandered)."""
        return float(row_norms(self._rows(self.local_params) - self.params_before).mean())

    @property
    def correction_norm(self) -> float:
        """Mean over participants of ``‖g − a_i‖``."""
        return float(correction_norms(self._rows(self.anchor_grads), self.global_grad).mean())


class LocalSolver(Protocol):
    """
    The agent half of a round: what every agent does between receiving ``θ̄`` and sending ``θ_{i,H}``.

    Local solvers plug in here (the paper's corrected gradient steps, PPO-style epochs,
    variance-controlled corrections); the server half of the round never changes.
    Both methods work on stacked agents: all of them in-process, one in a Flower client.
    """

    def anchor(self, global_params: Any, n_agents: int) -> Any:
        """
        Phase 1: each agent's anchor ``a_i = ĝ_i(θ̄)``.

        :param global_params: ``θ̄``, shape ``(p,)``
        :param n_agents: number of agents (rows) to compute
        :return: anchors ``(n_agents, p)``, or their :class:`ScaledAnchors` parts when the server sets the advantage
            scale (the solver then also has ``use_advantage_scale(σ)``, called before :meth:`local_round`)
        """
        ...

    def local_round(self, global_params: Any, anchor_grads: Any, global_grad: Any) -> Any:
        """
        Phase 2: each agent's local solve from ``θ̄`` given its anchor ``a_i`` and the server's ``g``.

        :param global_params: ``θ̄``, shape ``(p,)``
        :param anchor_grads: ``a_i``, shape ``(n, p)``
        :param global_grad: ``g``, shape ``(p,)``
        :return: final local parameters ``θ_{i,H}``, shape ``(n, p)``
        """
        ...


@dataclass
class CorrectedGradientSteps:
    """
    The paper's local solver: ``H`` steps along ``ĝ_i(θ_{i,ℓ}) − a_i + g`` (FedAvg-PG without correction).

    :param grad_fn: the agents' gradient oracle (``step=-1`` for the anchor batch)
    :param local_steps: ``H``
    :param local_update: how a direction moves the parameters (e.g. :func:`gradient_step`)
    :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
    :param reuse_anchor: reuse the anchor batch at ``ℓ = 0`` (see :func:`run_local_steps`)
    """

    grad_fn: GradientOracle
    local_steps: int
    local_update: LocalUpdate
    correction: bool = True
    reuse_anchor: bool = True

    def anchor(self, global_params: Any, n_agents: int) -> Any:
        return self.grad_fn(broadcast_to_agents(global_params, n_agents), -1)

    def local_round(self, global_params: Any, anchor_grads: Any, global_grad: Any) -> Any:
        return run_local_steps(
            global_params,
            anchor_grads,
            global_grad,
            self.grad_fn,
            self.local_steps,
            self.local_update,
            correction=self.correction,
            reuse_anchor=self.reuse_anchor,
        )


def _taking_part(stacked: Any, participants: Any) -> Any:
    return stacked if participants is None else stacked[participants]


def server_global_gradient(
    received_anchors: ArrayT, aggregator: Aggregator = mean_aggregate, participants: Any = None
) -> ArrayT:
    """
    Server half, phase 1: ``g`` from the anchors received from the participants.

    :param received_anchors: what the server received, ``(n, p)`` (possibly corrupted by Byzantine agents)
    :param aggregator: reduction over agents
    :param participants: boolean mask of this round's participants (``None``: all rows)
    :return: ``g``, shape ``(p,)``
    """
    return average_anchor_gradients(_taking_part(received_anchors, participants), aggregator)


def server_new_params(
    global_params: ArrayT,
    received_local_params: ArrayT,
    server_learning_rate: float = 1.0,
    aggregator: Aggregator = mean_aggregate,
    participants: Any = None,
) -> ArrayT:
    """
    Server half, phase 2: ``θ̄ ← θ̄ + η_g · agg_i Δ_i`` over the participants.

    :param global_params: ``θ̄_t``, shape ``(p,)``
    :param received_local_params: ``θ̄_t + Δ_i`` as received, ``(n, p)``
    :param server_learning_rate: ``η_g``
    :param aggregator: reduction over agents
    :param participants: boolean mask of this round's participants (``None``: all rows)
    :return: ``θ̄_{t+1}``
    """
    return aggregate_parameter_changes(
        global_params, _taking_part(received_local_params, participants), server_learning_rate, aggregator
    )


def run_round(
    global_params: ArrayT,
    solver: LocalSolver,
    n_agents: int,
    server_learning_rate: float = 1.0,
    aggregator: Aggregator = mean_aggregate,
    participants: Any = None,
    attack: Callable[[Any, str], Any] | None = None,
) -> RoundResult:
    """
    One communication round with every agent in this process: the agent half from ``solver``,
    the server half from :func:`server_global_gradient` and :func:`server_new_params` (which the
    Flower server calls too).

    With partial participation only the participants' anchors form ``g`` and only their
    parameter changes are averaged; everyone's correction uses that ``g``. Agents that
    do not take part are computed alongside (they are rows of one batched computation)
    but their results are discarded, exactly as if they had not answered.

    :param global_params: ``θ̄_t``, shape ``(p,)``
    :param solver: the agents' local solver
    :param n_agents: ``N``
    :param server_learning_rate: ``η_g``
    :param aggregator: reduction over agents for both ``g`` and the parameter changes
    :param participants: boolean mask ``(n_agents,)`` of the agents averaged this round (``None``: all)
    :param attack: for robustness experiments, rewrites what the server receives, ``attack(stacked, phase)``
        with ``phase`` ``"anchor"`` or ``"delta"`` (see :class:`~sb3_fedpg.common.adversarial.ByzantineAttack`)
    :return: the round's :class:`RoundResult`
    """
    anchors, advantage_scale = solver_anchors(solver, global_params, n_agents, participants)
    sent_anchors = anchors if attack is None else attack(anchors, "anchor")
    global_grad = server_global_gradient(sent_anchors, aggregator, participants)
    local = solver.local_round(global_params, anchors, global_grad)
    if attack is not None:  # adversaries choose the change Δ_i they send
        local = global_params + attack(local - global_params, "delta")
    new_params = server_new_params(global_params, local, server_learning_rate, aggregator, participants)
    return RoundResult(
        params=new_params,
        anchor_grads=anchors,
        global_grad=global_grad,
        local_params=local,
        params_before=global_params,
        participants=participants,
        advantage_scale=advantage_scale,
    )


def fedpg_round(
    global_params: ArrayT,
    grad_fn: GradientOracle,
    n_agents: int,
    local_steps: int,
    local_update: LocalUpdate,
    server_learning_rate: float = 1.0,
    correction: bool = True,
    reuse_anchor: bool = True,
    aggregator: Aggregator = mean_aggregate,
    participants: Any = None,
    attack: Callable[[Any, str], Any] | None = None,
) -> RoundResult:
    """
    One round of Fast-FedPG (or FedAvg-PG): :func:`run_round` with :class:`CorrectedGradientSteps`.

    :param global_params: ``θ̄_t``, shape ``(p,)``
    :param grad_fn: the agents' gradient oracle (called with ``step=-1`` for the anchors)
    :param n_agents: ``N``
    :param local_steps: ``H``
    :param local_update: how a direction moves the parameters (e.g. :func:`gradient_step`)
    :param server_learning_rate: ``η_g``
    :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
    :param reuse_anchor: reuse the anchor batch at ``ℓ = 0`` (see :func:`run_local_steps`)
    :param aggregator: reduction over agents for both ``g`` and the parameter changes
    :param participants: boolean mask ``(n_agents,)`` of the agents averaged this round (``None``: all)
    :param attack: rewrites what the server receives (see :func:`run_round`)
    :return: the round's :class:`RoundResult`
    """
    solver = CorrectedGradientSteps(grad_fn, local_steps, local_update, correction, reuse_anchor)
    return run_round(global_params, solver, n_agents, server_learning_rate, aggregator, participants, attack)


def round_metrics(result: RoundResult, correction: bool = True, itemsize: int | None = None) -> dict[str, float]:
    """
    The round's ``fed/`` metrics, the same in-process and on the Flower server.

    :param result: the round
    :param correction: whether the anchors and ``g`` were exchanged (Fast-FedPG) or not (FedAvg-PG)
    :param itemsize: bytes per transmitted number (``None``: those of the parameters' dtype — 4 for the neural
        policies' float32, 8 for the tabular task's float64)
    :return: logger key → value
    """
    n_params = int(result.params_before.shape[0])
    if itemsize is None:
        before = result.params_before
        itemsize = before.element_size() if isinstance(before, th.Tensor) else np.asarray(before).dtype.itemsize
    bytes_up, bytes_down = round_message_bytes(n_params, result.n_participants, correction, itemsize)
    global_grad = result.global_grad
    grad_norm = th.linalg.vector_norm(global_grad) if isinstance(global_grad, th.Tensor) else np.linalg.norm(global_grad)
    metrics = {
        "fed/participants": result.n_participants,
        "train/policy_gradient_norm": float(grad_norm),
        "fed/drift": result.drift,
        "fed/bytes_up": bytes_up,
        "fed/bytes_down": bytes_down,
    }
    if correction:  # without it the anchors stay with the agents: a real server could not know ‖g − a_i‖
        metrics["fed/correction_norm"] = result.correction_norm
    if result.advantage_scale is not None:
        metrics["train/advantage_scale"] = float(result.advantage_scale)
    return metrics


# VARIANCE_CONTROLS (imported above from the torch-free hyperparameters): the variance controls of the correction
# (``FederatedPG(variance_control=...)``); each reduces to the paper's correction with exact gradients
# (:func:`variance_controlled_gradient`).


def anchor_noise_variance(sub_gradients: ArrayT) -> ArrayT:
    """
    Unbiased estimate of ``tr Var[a_i]`` for each agent, from ``k ≥ 2`` independent sub-batch gradients whose
    mean is the anchor ``a_i``: ``Σ_b ‖g_b − a_i‖² / (k (k − 1))``.

    :param sub_gradients: ``(k, n, p)`` gradients of ``k`` disjoint, equally sized sub-batches of each agent
    :return: ``(n,)`` estimated variance (trace) of each agent's anchor
    """
    k = sub_gradients.shape[0]
    if k < 2:
        raise ValueError("the anchor's noise needs at least two independent sub-batches.")
    centred = sub_gradients - sub_gradients.mean(0)
    return (centred**2).sum((0, 2)) / (k * (k - 1))  # positional: numpy's axis, torch's dim


def correction_signal_noise(
    anchor_grads: ArrayT,
    global_grad: ArrayT,
    noise_variance: ArrayT,
    n_agents: int | None = None,
    noise_sum: float | None = None,
) -> tuple[ArrayT, ArrayT]:
    """
    Each agent's correction ``g − a_i`` split into heterogeneity (signal) and sampling noise.

    ``E‖g − a_i‖² = ‖E(g − a_i)‖² + tr Var(g − a_i)``, with independent agents
    ``tr Var(g − a_i) = (1 − 2/N) v_i + (1/N²) Σ_j v_j`` (``v_i = tr Var a_i``, ``g`` the mean of the ``N`` anchors).
    The signal ``‖E(g − a_i)‖²`` is estimated without bias by ``‖g − a_i‖² − tr Var(g − a_i)`` (it may come out
    negative in one round; average it over rounds before clipping).

    :param anchor_grads: ``a_i``, ``(n, p)`` (the agents whose mean is ``g``)
    :param global_grad: ``g``, ``(p,)``
    :param noise_variance: ``v_i``, ``(n,)`` (:func:`anchor_noise_variance`)
    :param n_agents: ``N`` when the rows are only some of the agents (a Flower agent computes its own row; ``None``:
        the rows are all)
    :param noise_sum: ``Σ_j v_j`` over all ``N`` agents, with ``n_agents``
    :return: ``(signal, noise)``, each ``(n,)``
    """
    n = anchor_grads.shape[0] if n_agents is None else n_agents
    total = noise_variance.sum() if noise_sum is None else noise_sum
    raw = row_norms(global_grad - anchor_grads) ** 2
    noise = (1 - 2 / n) * noise_variance + total / n**2
    return raw - noise, noise


def correction_snr(anchor_grads: ArrayT, global_grad: ArrayT, noise_variance: ArrayT) -> ArrayT:
    """
    Signal-to-noise ratio of each agent's correction ``g − a_i`` in one round: ``max(signal, 0) / noise``
    (:func:`correction_signal_noise`).

    :param anchor_grads: ``a_i``, ``(n, p)`` (the agents whose mean is ``g``)
    :param global_grad: ``g``, ``(p,)``
    :param noise_variance: ``v_i``, ``(n,)`` (:func:`anchor_noise_variance`)
    :return: ``(n,)`` ratios (``inf`` where the noise is 0)
    """
    signal, noise = correction_signal_noise(anchor_grads, global_grad, noise_variance)
    return snr_from(signal, noise)


def snr_from(signal: ArrayT, noise: ArrayT) -> ArrayT:
    """
    :param signal: signal estimates (clipped at 0 here)
    :param noise: noise variances
    :return: ``max(signal, 0) / noise``; where the noise is 0, ``inf`` if there is signal (exact gradients: all
        signal) and 0 if there is none either (no correction at all: one agent, or identical agents' exact gradients)
    """
    if isinstance(signal, np.ndarray):
        clipped = signal.clip(min=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(noise > 0, clipped / np.where(noise > 0, noise, 1.0), np.where(clipped > 0, np.inf, 0.0))
    clipped = signal.clamp(min=0)
    noiseless = th.where(clipped > 0, th.full_like(noise, float("inf")), th.zeros_like(noise))
    return th.where(noise > 0, clipped / th.where(noise > 0, noise, th.ones_like(noise)), noiseless)


def snr_damping(snr: ArrayT) -> ArrayT:
    """
    The damping ``β_i = SNR_i / (1 + SNR_i)`` of the correction (a Wiener-style shrinkage): ``β → 1`` when
    heterogeneity dominates (and with exact gradients, where the noise is 0), ``β → 0`` when noise does.

    :param snr: ``(n,)`` signal-to-noise ratios (:func:`correction_snr`)
    :return: ``(n,)`` damping factors in ``[0, 1]``
    """
    # inf (no noise at all): the paper's correction, β = 1
    if isinstance(snr, np.ndarray):
        finite = np.where(np.isinf(snr), 0.0, snr)
        return np.where(np.isinf(snr), 1.0, finite / (1 + finite))
    finite = th.where(th.isinf(snr), th.zeros_like(snr), snr)
    return th.where(th.isinf(snr), th.ones_like(snr), finite / (1 + finite))


def correction_filter_step(
    observed: ArrayT, noise: ArrayT, estimate: ArrayT, variance: ArrayT, drift: ArrayT
) -> tuple[ArrayT, ArrayT, ArrayT]:
    """
    One round of a scalar (isotropic) Kalman filter on each agent's correction ``c_i = E(g − a_i)``.

    Model: the true correction moves between rounds by a step of expected squared norm ``q_i`` (``drift``: it
    changes with ``θ̄``), and this round's ``y_i = g − a_i`` observes it with noise of trace ``σ_i²`` (``noise``,
    from :func:`correction_signal_noise`). Predict ``P⁻ = P + q``; gain ``K = P⁻ / (P⁻ + σ²)``; update
    ``ĉ ← ĉ + K (y − ĉ)``, ``P ← (1 − K) P⁻``. With ``σ² = 0`` (exact gradients) ``K = 1`` and ``ĉ = g − a_i``: the
    paper's correction. With a still correction (``q = 0``) it is the running mean of the observations; in between,
    an exponential average whose memory the filter chooses from the measured drift and noise. Costs no samples.

    :param observed: ``y_i = g − a_i``, ``(n, p)``
    :param noise: ``σ_i² = tr Var(g − a_i)``, ``(n,)``
    :param estimate: ``ĉ_i`` of the previous round, ``(n, p)``
    :param variance: ``P_i``, the trace of the estimate's error covariance, ``(n,)``
    :param drift: ``q_i ≥ 0``, ``(n,)`` (:func:`correction_drift_sample` averaged over rounds)
    :return: ``(estimate, variance, gain)`` of this round
    """
    prior = variance + drift
    if isinstance(noise, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(noise > 0, prior / (prior + noise), 1.0)
    else:
        gain = th.where(noise > 0, prior / (prior + noise).clamp(min=th.finfo(noise.dtype).tiny), th.ones_like(noise))
    new_estimate = estimate + gain.reshape(-1, 1) * (observed - estimate)
    return new_estimate, (1 - gain) * prior, gain


def correction_drift_sample(observed: ArrayT, noise: ArrayT, estimate: ArrayT, variance: ArrayT) -> ArrayT:
    """
    An unbiased one-round sample of the filter's drift ``q_i`` from the innovation (Mehra's adaptive filter):
    ``E‖y_i − ĉ_i‖² = P_i + q_i + σ_i²``, so ``‖y_i − ĉ_i‖² − P_i − σ_i²`` (may be negative; average it over rounds
    and clip at 0 before use).

    :param observed: ``y_i = g − a_i``, ``(n, p)``
    :param noise: ``σ_i²``, ``(n,)``
    :param estimate: ``ĉ_i`` of the previous round, ``(n, p)``
    :param variance: ``P_i`` of the previous round, ``(n,)``
    :return: ``(n,)``
    """
    return row_norms(observed - estimate) ** 2 - variance - noise


def variance_controlled_gradient(
    local_grads: ArrayT,
    anchor_grads: ArrayT,
    global_grad: ArrayT,
    variance_control: str = "none",
    grads_at_anchor_params: ArrayT | None = None,
    damping: ArrayT | None = None,
    filtered_correction: ArrayT | None = None,
) -> ArrayT:
    """
    The local gradient to feed to :func:`corrected_direction` so that the direction is the chosen variant:

    - ``"none"`` (the paper): ``d = ĝ_i(θ_{i,ℓ}; B_ℓ) − a_i + g``;
    - ``"control_variate"``: ``d = ĝ_i(θ_{i,ℓ}; B_ℓ) − ĝ_i(θ̄; B_ℓ) + g`` — the same fresh batch evaluated at ``θ̄``
      (``grads_at_anchor_params``), so the two noisy terms are correlated and largely cancel;
    - ``"snr_damping"``: ``d = ĝ_i(θ_{i,ℓ}; B_ℓ) + β_i (g − a_i)`` with ``β_i`` from the measured SNR (``damping``);
    - ``"filtered"``: ``d = ĝ_i(θ_{i,ℓ}; B_ℓ) + ĉ_i`` with ``ĉ_i`` the correction filtered over rounds
      (``filtered_correction``, :func:`correction_filter_step`).

    With exact gradients ``ĝ_i(θ̄; ·) = a_i`` and the noise is 0 (``β = 1``, ``ĉ_i = g − a_i``): every variant is
    the paper's update.

    :param local_grads: ``ĝ_i(θ_{i,ℓ}; B_ℓ)``, ``(n, p)``
    :param anchor_grads: ``a_i``, ``(n, p)``
    :param global_grad: ``g``, ``(p,)``
    :param variance_control: one of :data:`VARIANCE_CONTROLS`
    :param grads_at_anchor_params: ``ĝ_i(θ̄; B_ℓ)`` (``"control_variate"``)
    :param damping: ``β_i``, ``(n,)`` (``"snr_damping"``)
    :param filtered_correction: ``ĉ_i``, ``(n, p)`` (``"filtered"``)
    :return: ``x`` with ``corrected_direction(x, a, g)`` the variant's direction
    """
    if variance_control == "none":
        return local_grads
    if variance_control == "control_variate":
        assert grads_at_anchor_params is not None, "the control variate needs ĝ_i(θ̄; B_ℓ)"
        return local_grads - grads_at_anchor_params + anchor_grads
    if variance_control == "snr_damping":
        assert damping is not None, "SNR damping needs β"
        beta = damping.reshape(-1, 1)
        return local_grads - (1 - beta) * (global_grad - anchor_grads)
    if variance_control == "filtered":
        assert filtered_correction is not None, "the filtered correction needs ĉ_i"
        return local_grads - (global_grad - anchor_grads) + filtered_correction
    raise ValueError(f"unknown variance_control {variance_control!r}: choose one of {VARIANCE_CONTROLS}.")


# ---------------------------------------------------------------- advantage statistics shared across agents
# Normalising each agent's advantages by its own standard deviation σ_i makes the federation climb Σ_i ∇J_i / σ_i,
# whose stationary point is not that of the average return whenever the agents' reward scales differ. One scale
# shared by all agents (a positive constant common to every agent's gradient) keeps the average return's
# stationary points. With their anchor's parts the agents send the moments of their centred advantages (count, M2,
# groups: no samples); the server pools them into this round's scale σ and assembles the anchors with it.


def advantage_moments(values: ArrayT, valid: ArrayT | None = None) -> ArrayT:
    """
    Each agent's sufficient statistics of its centred advantages: the count, the sum of squared deviations from its
    own mean (``M2``) and the number of groups centred (1). All three add up over batches and agents.

    :param values: advantages (or the estimator's weights), ``(n, ...)``
    :param valid: 1 where a value belongs to the estimate (same shape; ``None``: all)
    :return: ``(n, 3)``: count, M2, groups per agent
    """
    flat = values.reshape(values.shape[0], -1)
    mask = flat * 0 + 1 if valid is None else valid.reshape(flat.shape) * 1.0
    count = mask.sum(1)
    mean = (flat * mask).sum(1) / (count + (count == 0))
    m2 = (((flat - mean[:, None]) * mask) ** 2).sum(1)
    groups = (count > 0) * 1.0
    if isinstance(flat, np.ndarray):
        return np.stack([count, m2, groups], axis=1)
    return th.stack([count, m2, groups], dim=1)


def shared_advantage_scale(moments: ArrayT, participants: Any = None) -> float | None:
    """
    The server's shared scale: the pooled within-agent standard deviation of the participants' advantages,
    ``√(Σ_i M2_i / (Σ_i n_i − groups))`` — each agent centres its own advantages (a baseline of its own), so the
    spread between the agents' means is not part of the scale. One agent: its own standard deviation, as SB3's.

    :param moments: the agents' :func:`advantage_moments` (summed over batches), ``(n, 3)``
    :param participants: boolean mask of the agents whose moments count (``None``: all)
    :return: the scale; ``None`` when no group had two samples or every advantage equalled its group's mean
    """
    count, m2, groups = (float(x) for x in _taking_part(moments, participants).sum(0))
    if count - groups < 1 or not m2 > 0 or not np.isfinite(m2):
        return None
    return float(np.sqrt(m2 / (count - groups)))


def advantage_ratios(moments: ArrayT, scale: float) -> ArrayT:
    """
    Each agent's own advantage scale relative to the shared one, ``ρ_i = σ_i / σ``. A batch normalised by its own
    standard deviation and multiplied by ``ρ_i`` has agent ``i``'s scale in units of ``σ``: every agent's gradient
    keeps its reward's scale (the average return's gradient up to the common ``1/σ``), while each batch or minibatch
    keeps SB3's own-scale step control.

    :param moments: the agents' :func:`advantage_moments` of the anchor's batches, ``(n, 3)``
    :param scale: ``σ`` (:func:`shared_advantage_scale`)
    :return: ``ρ``, ``(n,)``
    """
    count, m2, groups = moments[:, 0], moments[:, 1], moments[:, 2]
    dof = count - groups
    own = (m2 / (dof + (dof < 1))) ** 0.5
    return own / (scale + 1e-8)


@dataclass
class ScaledAnchors:
    """
    Anchors whose advantage scale the server sets (``normalize_advantage="shared"``): ``a_i = p_i / σ + e_i``, with
    ``p_i`` the policy-gradient part computed from centred, unscaled advantages, ``e_i`` the entropy bonus's gradient
    and ``σ`` the standard deviation of this round's advantages pooled over the participants
    (:func:`shared_advantage_scale` of ``moments``). The agents send ``p_i`` (and ``e_i`` when there is an entropy
    bonus) with their moments; the server forms ``σ``, the anchors and ``g``, and sends ``σ`` back with ``g``.

    :param policy: ``p_i``, ``(n, p)``
    :param entropy: ``e_i``, ``(n, p)`` (``None``: no entropy bonus)
    :param moments: every agent's :func:`advantage_moments` of the anchor's batches, ``(n, 3)``
    """

    policy: Any
    entropy: Any
    moments: Any

    def assemble(self, scale: float) -> Any:
        """
        :param scale: ``σ``
        :return: the anchors ``p_i / σ + e_i``
        """
        anchors = self.policy / (scale + 1e-8)
        return anchors if self.entropy is None else anchors + self.entropy

    def vector(self) -> Any:
        """:return: what an agent sends: ``p_i`` followed by ``e_i`` when there is an entropy bonus, ``(n, p or 2p)``"""
        if self.entropy is None:
            return self.policy
        if isinstance(self.policy, np.ndarray):
            return np.concatenate([self.policy, self.entropy], axis=1)
        return th.cat([self.policy, self.entropy], dim=1)

    @classmethod
    def from_vector(cls, vector: Any, n_params: int, moments: Any) -> ScaledAnchors:
        """
        :param vector: the output of :meth:`vector`, ``(n, p)`` or ``(n, 2p)``
        :param n_params: ``p``
        :param moments: the agents' moments ``(n, 3)``
        :return: the anchors' parts
        """
        entropy = vector[:, n_params:] if vector.shape[1] == 2 * n_params else None
        return cls(vector[:, :n_params], entropy, moments)


def assemble_anchors(parts: ScaledAnchors, participants: Any = None) -> tuple[Any, float]:
    """
    Server half, phase 1, shared normalisation: the round's scale from the participants' moments, and every agent's
    anchor with it.

    :param parts: the agents' anchor parts
    :param participants: boolean mask of this round's participants (``None``: all)
    :return: the anchors ``(n, p)`` and the scale ``σ`` (1 when fewer than two samples arrived or all advantages
        were equal: the centred advantages are then 0 anyway)
    """
    scale = shared_advantage_scale(parts.moments, participants)
    scale = 1.0 if scale is None else scale
    return parts.assemble(scale), scale


def solver_anchors(
    solver: LocalSolver, global_params: Any, n_agents: int, participants: Any = None
) -> tuple[Any, float | None]:
    """
    Phase 1 of a round with every agent in this process: the solver's anchors, assembled by the server's scale
    (:func:`assemble_anchors`, then handed to the solver) when it sends them in parts.

    :param solver: the agents' local solver
    :param global_params: ``θ̄``
    :param n_agents: ``N``
    :param participants: boolean mask of this round's participants (``None``: all)
    :return: the anchors ``(n, p)`` and the round's advantage scale (``None``: the solver sent whole anchors)
    """
    anchors = solver.anchor(global_params, n_agents)
    if not isinstance(anchors, ScaledAnchors):
        return anchors, None
    assembled, scale = assemble_anchors(anchors, participants)
    cast(Any, solver).use_advantage_scale(scale)
    return assembled, scale


def normalized_advantages(
    values: th.Tensor, dims: tuple[int, ...], valid: th.Tensor | None = None, centre_only: bool = False
) -> th.Tensor:
    """
    Advantages centred over ``dims`` (a baseline per agent or minibatch: no change of the gradient's expectation)
    and divided by their own standard deviation over ``dims``, unless ``centre_only`` (the server sets their scale:
    :class:`ScaledAnchors`).

    :param values: advantages
    :param dims: the axes of one agent's (or one minibatch's) samples
    :param valid: 1 where a value belongs to the estimate (others give 0; ``None``: all)
    :param centre_only: centre, do not scale
    :return: the normalised advantages
    """
    if valid is None:
        centred = values - values.mean(dims, keepdim=True)
        return centred if centre_only else centred / (values.std(dims, keepdim=True) + 1e-8)
    count = valid.sum(dim=dims, keepdim=True).clamp(min=2)
    centred = (values - (values * valid).sum(dim=dims, keepdim=True) / count) * valid
    if centre_only:
        return centred
    std = (centred.pow(2).sum(dim=dims, keepdim=True) / (count - 1)).sqrt()
    return centred / (std + 1e-8)


# ---------------------------------------------------------------- observation statistics merged across agents
# Federated observation normalisation (sb3_fedpg.common.vec_normalize): every agent keeps running statistics of its
# observations (SB3's RunningMeanStd: count, mean, variance) and, apart, those of the observations it saw since the
# last merge (a delta). At a round boundary the server merges the global statistics with the participants' deltas;
# the result is what one RunningMeanStd fed every agent's observations would hold. Chan et al.'s parallel update:
# for two sets with (n_a, μ_a, M2_a) and (n_b, μ_b, M2_b), with δ = μ_b − μ_a and n = n_a + n_b,
# μ = μ_a + δ n_b / n and M2 = M2_a + M2_b + δ² n_a n_b / n (M2: the sum of squared deviations, n · variance).

#: Sufficient statistics of a set of observations: ``(count, mean, M2)``, ``M2`` the sum of squared deviations from
#: the mean (``count · var``); ``mean`` and ``M2`` have the observation's shape (float64).
RunningMoments = tuple[float, np.ndarray, np.ndarray]


def merge_running_moments(parts: list[RunningMoments] | tuple[RunningMoments, ...]) -> RunningMoments:
    """
    The statistics of the union of disjoint sets of observations from each set's ``(count, mean, M2)`` (Chan, Golub
    and LeVeque's parallel variance, the update of SB3's ``RunningMeanStd.update_from_moments``), exact up to
    rounding and independent of how the data were split. Parts with a count of 0 are skipped.

    :param parts: the sets' statistics (at least one; all means and M2 of one shape)
    :return: the merged ``(count, mean, M2)`` (count 0, mean 0 and M2 0 when every part is empty)
    """
    if len(parts) == 0:
        raise ValueError("merge_running_moments needs at least one part")
    shape = np.shape(parts[0][1])
    count, mean, m2 = 0.0, np.zeros(shape, np.float64), np.zeros(shape, np.float64)
    for n_b, mean_b, m2_b in parts:
        n_b = float(n_b)
        mean_b, m2_b = np.asarray(mean_b, np.float64), np.asarray(m2_b, np.float64)
        if mean_b.shape != shape or m2_b.shape != shape:
            raise ValueError(f"statistics of shapes {mean_b.shape}/{m2_b.shape} cannot be merged with shape {shape}")
        if not np.isfinite(n_b) or n_b < 0:
            raise ValueError(f"a count must be a finite number >= 0, got {n_b!r}")
        if n_b == 0:
            continue
        if count == 0:  # the first non-empty part, as it is
            count, mean, m2 = n_b, mean_b.copy(), m2_b.copy()
            continue
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * n_b / total
        m2 = m2 + m2_b + np.square(delta) * count * n_b / total
        count = total
    return count, mean, m2


# ---------------------------------------------------------------- module buffers averaged across agents
# A features extractor with buffers (batch norm's running_mean, running_var, num_batches_tracked) gives every agent its
# own rows of them, moved by its own train-mode passes during a round (sb3_fedpg.common.batched_policy.BufferRows);
# at the round's aggregation the server averages the participants' rows into the global buffers (docs/algorithms.md).


def average_buffers(rows: dict[str, ArrayT], participants: Any = None) -> dict[str, ArrayT]:
    """
    The global buffers of a round: the plain mean over the participants of every agent's buffers (floating ones), the
    floor of the mean for integer ones (batch norm's ``num_batches_tracked``).

    Why the plain mean of the running means and variances, and not the exact merge of moments (the law of total
    variance, ``mean_i v_i + var_i m_i``, which :func:`merge_running_moments` gives the observation statistics):

    - In train mode batch norm normalises each agent's features with the statistics of *its own* batch (an agent's
      pass never mixes agents' samples), so the variance the network is trained under is the within-agent one; the
      mean of the agents' running variances estimates its average, while the merge of moments adds the spread of
      the agents' means, which no training pass normalised with. The eval mode (rollouts, ``predict``) should
      normalise as training did.
    - Running statistics are exponential averages, not sample moments with counts: each agent's row keeps a weight
      ``ρ = (1 − momentum)^k`` on the global value it started the round from (``k``: its train-mode passes in the
      round). Merged as moments, the global variance settles at ``σ̄² + (1 − ρ)·var_i μ_i``, a value set by how many
      passes a round happens to have (``local_steps``, ``n_epochs``, ``batch_size``), neither the within-agent
      ``σ̄²`` nor the pooled ``σ̄² + var_i μ_i``; the plain mean settles at ``(μ̄, σ̄²)`` whatever the round's shape.
    - The observation statistics differ: they are exact counts-based moments of the raw observations, and every
      pass of the network (train or eval) sees observations normalised by them, so the pooled population is the
      right one there.
    - It is FedAvg's rule for the whole state (parameters and buffers alike); with ``momentum=None`` (a cumulative
      average) and the same number of passes per agent, the mean of the rows and of the counts is again the
      cumulative average of the per-pass agent-averaged statistics.

    Every participant weighs the same: in a round every agent's batches have the same size. The aggregator of the
    parameters (a robust one included) is not applied here: the buffers carry no gradient and are not attacked.

    :param rows: stacked per-agent buffers by name, each ``(n_agents, *shape)``
    :param participants: boolean mask of this round's participants (``None``: all rows)
    :return: the global buffers by name, each ``shape``, of the rows' dtype
    """
    out: dict[str, Any] = {}  # of ArrayT (the rows' array type)
    for name, stacked in rows.items():
        taking_part = _taking_part(stacked, participants)
        count = int(taking_part.shape[0])
        if count == 0:
            raise ValueError(f"average_buffers: no participant's {name!r} to average")
        if isinstance(taking_part, th.Tensor):
            if taking_part.is_floating_point():
                out[name] = taking_part.mean(0)
            else:
                out[name] = th.div(taking_part.sum(0), count, rounding_mode="floor").to(taking_part.dtype)
        elif np.issubdtype(taking_part.dtype, np.floating):
            out[name] = taking_part.mean(0).astype(taking_part.dtype)
        else:
            out[name] = (taking_part.sum(0) // count).astype(taking_part.dtype)
    return out


# ---------------------------------------------------------------- FedSVRPG-M (Wang et al., ICML 2024)
# The momentum-based local solver of "Momentum for the Win" (arXiv 2405.19499, Algorithm 1): the agents track the
# global gradient with a STORM-style momentum whose correction is importance weighted; the server derives the next
# momentum from the parameter changes it already receives. See sb3_fedpg.svrpgm and docs/algorithms.md.


def importance_weights(
    log_prob_target: ArrayT,
    log_prob_behaviour: ArrayT,
    time_axis: int,
    valid: ArrayT | None = None,
    max_weight: float | None = None,
) -> ArrayT:
    """
    Trajectory importance weights ``w(τ) = p(τ | θ_target) / p(τ | θ_behaviour)``, i.e.
    ``Π_h π_target(a_h|s_h) / π_behaviour(a_h|s_h)``, of trajectories sampled under ``θ_behaviour`` (the transition
    probabilities cancel: they do not depend on ``θ``). FedSVRPG-M's weight ``w(τ | θ̄_{r−1}, θ_{i,k})`` has
    ``θ_target = θ̄_{r−1}`` (the previous global parameters) and ``θ_behaviour = θ_{i,k}`` (the agent's current
    parameters, which sampled ``τ``). ``E_{τ∼θ_b}[w(τ) f(τ)] = E_{τ∼θ_t}[f(τ)]`` for any ``f``: unbiased, unless
    ``max_weight`` truncates it.

    :param log_prob_target: ``log π_target(a_h|s_h)`` of every step
    :param log_prob_behaviour: ``log π_behaviour(a_h|s_h)`` of the same steps (same shape)
    :param time_axis: the axis of the steps ``h`` (summed over)
    :param valid: 1 for the steps that belong to the trajectory, 0 after its end (``None``: all)
    :param max_weight: truncate the weights from above (the authors' experiments clip at 1.2 to 1.8; ``None``: the
        paper's untruncated weight)
    :return: the weights, the input's shape without ``time_axis``
    """
    log_ratio = log_prob_target - log_prob_behaviour
    if valid is not None:
        log_ratio = log_ratio * valid
    if isinstance(log_prob_target, np.ndarray):
        weights = np.exp(log_ratio.sum(axis=time_axis))
        return weights if max_weight is None else np.minimum(weights, max_weight)
    tensor = th.exp(log_ratio.sum(dim=time_axis))
    return tensor if max_weight is None else tensor.clamp(max=max_weight)


def momentum_direction(
    local_grads: ArrayT, weighted_grads_at_previous: ArrayT, momentum: ArrayT, momentum_coef: float
) -> ArrayT:
    """
    FedSVRPG-M's local direction (the paper's Eq. (4)), on one fresh batch ``B`` sampled at ``θ_{i,k}``:

    ``u_{i,k} = β ĝ_i(θ_{i,k}; B) + (1 − β) (u_r + ĝ_i(θ_{i,k}; B) − ŵ ĝ_i(θ̄_{r−1}; B))``

    where ``ŵ ĝ_i(θ̄_{r−1}; B)`` is the batch's importance-weighted gradient at the previous global parameters
    (``(1/M) Σ_m w(τ_m | θ̄_{r−1}, θ_{i,k}) ĝ_i(θ̄_{r−1}; τ_m)``) and ``u_r`` the server's momentum. In expectation the
    bracket is ``u_r + ∇J_i(θ_{i,k}) − ∇J_i(θ̄_{r−1})``: ``u_r`` (≈ the global gradient near ``θ̄_{r−1}``) moved to
    ``θ_{i,k}`` along agent ``i``'s own gradient difference. ``β = 1`` is FedAvg-PG's local step.

    :param local_grads: ``ĝ_i(θ_{i,k}; B)``, ``(n, p)``
    :param weighted_grads_at_previous: ``ŵ ĝ_i(θ̄_{r−1}; B)``, ``(n, p)``
    :param momentum: ``u_r``, ``(p,)``
    :param momentum_coef: ``β ∈ (0, 1]``
    :return: ``u_{i,k}``, ``(n, p)``
    """
    return local_grads + (1 - momentum_coef) * (momentum - weighted_grads_at_previous)


def server_momentum(
    global_params: ArrayT,
    received_local_params: ArrayT,
    learning_rate: float,
    local_steps: int,
    aggregator: Aggregator = mean_aggregate,
    participants: Any = None,
) -> ArrayT:
    """
    FedSVRPG-M's server momentum ``u_{r+1} = (1 / (η H)) agg_i (θ_{i,H} − θ̄_r)`` (the paper's server step, with
    ``K = H`` local steps): with plain local steps ``θ_{i,k+1} = θ_{i,k} + η u_{i,k}`` it is the average of every
    agent's ``H`` local directions, i.e. the agents' momenta averaged over agents and steps. The server computes it
    from the parameter changes it receives anyway (:func:`server_new_params` moves ``θ̄`` by ``η_g`` times the same
    average, i.e. the paper's ``θ̄_{r+1} = θ̄_r + λ u_{r+1}`` with ``λ = η_g η H``).

    :param global_params: ``θ̄_r``, ``(p,)``
    :param received_local_params: ``θ_{i,H}`` as received, ``(n, p)``
    :param learning_rate: the round's local step size ``η``
    :param local_steps: ``H``
    :param aggregator: reduction over agents (the one the parameters are aggregated with)
    :param participants: boolean mask of the round's participants (``None``: all rows)
    :return: ``u_{r+1}``, ``(p,)``
    """
    changes = _taking_part(received_local_params, participants) - global_params
    return checked_aggregate(aggregator, changes, "parameter changes") / (learning_rate * local_steps)


class MomentumOracle(Protocol):
    """
    FedSVRPG-M's per-step gradients: one fresh batch ``B`` per agent, sampled at the agents' current parameters.

    Called with ``(params (n, p), step)``, returns ``(ĝ_i(θ_{i,k}; B), ŵ ĝ_i(θ̄_{r−1}; B))``, both ``(n, p)``: the
    gradient at the current parameters and the importance-weighted gradient at the previous global parameters on the
    same batch (:func:`momentum_direction`). ``step = -1``: the first round's anchor batch at ``θ̄_0`` (only the first
    gradient is used).
    """

    def __call__(self, params: Any, step: int, /) -> tuple[Any, Any]: ...


def run_momentum_steps(
    global_params: ArrayT,
    oracle: MomentumOracle,
    local_steps: int,
    local_update: LocalUpdate,
    momentum_coef: float,
    momentum: ArrayT,
    n_agents: int,
    first_grads: ArrayT | None = None,
) -> ArrayT:
    """
    FedSVRPG-M's local round: from ``θ_{i,0} = θ̄_r``, ``H`` steps ``θ_{i,k+1} = θ_{i,k} + η u_{i,k}`` along
    :func:`momentum_direction`, each on a fresh batch.

    :param global_params: ``θ̄_r``, ``(p,)``
    :param oracle: the agents' gradients (:class:`MomentumOracle`)
    :param local_steps: ``H``
    :param local_update: how a direction moves the parameters (e.g. :func:`gradient_step`)
    :param momentum_coef: ``β``
    :param momentum: the server's ``u_r``
    :param n_agents: agents (rows) stepping
    :param first_grads: the first round's anchors ``ĝ_i(θ̄_0)``, reused at ``k = 0`` (where ``θ_{i,0} = θ̄_0 = θ̄_{−1}``:
        the importance weight is 1 and both gradients are the anchor), or ``None`` (a fresh batch)
    :return: ``θ_{i,H}``, ``(n, p)``
    """
    params = broadcast_to_agents(global_params, n_agents)
    for step in range(local_steps):
        local, at_previous = (first_grads, first_grads) if step == 0 and first_grads is not None else oracle(params, step)
        params = local_update(params, momentum_direction(local, at_previous, momentum, momentum_coef), step)
    return params


@dataclass
class MomentumSteps:
    """
    FedSVRPG-M's local solver for any :class:`MomentumOracle` (exact or sampled tabular gradients; the neural one is
    :class:`sb3_fedpg.svrpgm.local_solver.MomentumPolicyGradientSteps`).

    What an agent needs from the server besides ``θ̄_r`` — the momentum ``u_r`` and the previous global parameters
    ``θ̄_{r−1}`` (inside the oracle) — is given when the solver is made, as a server sends it with ``θ̄_r``; after the
    round the server's next momentum is :func:`server_momentum`. Only the first round exchanges anchors: with no
    momentum yet (``momentum=None``), :meth:`anchor` computes ``a_i = ĝ_i(θ̄_0)`` and the server's average ``g`` is
    ``u_0`` (with ``θ̄_{−1} = θ̄_0``; the anchor batch is reused at ``k = 0``, so every round costs ``H`` batches).
    In every later round :meth:`anchor` returns zeros and costs nothing.

    :param oracle: the agents' gradients
    :param local_steps: ``H``
    :param local_update: how a direction moves the parameters
    :param momentum_coef: ``β``
    :param momentum: ``u_r`` (``None`` in the first round: ``u_0`` is the anchors' average)
    """

    oracle: MomentumOracle
    local_steps: int
    local_update: LocalUpdate
    momentum_coef: float
    momentum: Any = None

    def anchor(self, global_params: Any, n_agents: int) -> Any:
        stacked = broadcast_to_agents(global_params, n_agents)
        if self.momentum is not None:
            return stacked * 0
        return self.oracle(stacked, -1)[0]

    def local_round(self, global_params: Any, anchor_grads: Any, global_grad: Any) -> Any:
        first = self.momentum is None
        return run_momentum_steps(
            global_params,
            self.oracle,
            self.local_steps,
            self.local_update,
            self.momentum_coef,
            global_grad if first else self.momentum,
            anchor_grads.shape[0],
            first_grads=anchor_grads if first else None,
        )


def round_message_bytes(n_params: int, n_agents: int, correction: bool = True, itemsize: int = 4) -> tuple[int, int]:
    """
    Bytes sent per round (up, down), counting parameter payloads only.

    Down: ``θ̄`` to every agent, plus ``g`` with correction. Up: ``Δ_i`` from every agent,
    plus the anchor ``a_i`` with correction.

    :param n_params: size of the federated parameter vector
    :param n_agents: agents taking part in the round
    :param correction: Fast-FedPG (two vectors each way) or FedAvg-PG (one)
    :param itemsize: bytes per number (4 for float32)
    :return: ``(bytes_up, bytes_down)``
    """
    vectors = 2 if correction else 1
    total = vectors * n_params * n_agents * itemsize
    return total, total

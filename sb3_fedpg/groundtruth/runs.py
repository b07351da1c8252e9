"""
Federated runs on any ground-truth problem: Fast-FedPG, FedAvg-PG and FedSVRPG-M with exact or sampled gradients.

Every Fast-FedPG / FedAvg-PG round is one call of :func:`sb3_fedpg.common.fedmath.fedpg_round`, every FedSVRPG-M
round one :func:`sb3_fedpg.common.fedmath.run_round` with :class:`~sb3_fedpg.common.fedmath.MomentumSteps` — the same
round, local-solver and aggregation code the neural algorithms and the Flower apps use. A problem (a
:class:`~sb3_fedpg.groundtruth.protocol.GroundTruth`) supplies the gradient oracles and the exact evaluation; this
module runs the rounds, evaluates every global iterate exactly and records the gaps to the optimum.

Guard: parameters outside a problem's domain (an LQR gain that destabilises the closed loop) are never stepped
through: the oracle raises :class:`~sb3_fedpg.groundtruth.protocol.InvalidParamsError`, re-raised naming the round,
the local step and the step sizes, and every new global iterate is checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch as th

from sb3_fedpg.common.fedmath import (
    MomentumOracle,
    MomentumSteps,
    RoundResult,
    broadcast_to_agents,
    fedpg_round,
    gradient_step,
    importance_weights,
    run_round,
    server_momentum,
)
from sb3_fedpg.common.hyperparams import positive_float
from sb3_fedpg.groundtruth.protocol import (
    Baseline,
    GradientOracle,
    GroundTruth,
    InvalidParamsError,
    Optimum,
    RunResult,
    SampledEstimator,
)

#: ``make_oracle(θ̄_{r−1}) -> MomentumOracle``: a round's FedSVRPG-M oracle, given the previous global parameters.
MomentumOracleFactory = Callable[[np.ndarray], MomentumOracle]
#: ``θ̄_t ↦`` the round's :class:`~sb3_fedpg.common.fedmath.RoundResult` (an algorithm's state between rounds lives in
#: the callable).
OneRound = Callable[[np.ndarray], RoundResult]
ResultT = TypeVar("ResultT", bound=RunResult)


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """
    Run torch on one thread inside the block, then restore the previous setting.

    Small batched solves gain nothing from threads, and on a busy 2-core machine the
    thread hand-offs made them 5–10x slower (measured: 40 rounds S=100, N=16: 0.8 s with one
    thread vs 4–6 s with two while another process was running).
    """
    previous = th.get_num_threads()
    th.set_num_threads(1)
    try:
        yield
    finally:
        th.set_num_threads(previous)


class ImportanceSampler(SampledEstimator, Protocol):
    """A sampled estimator that can reweight its trajectories (FedSVRPG-M's importance-weighted term)."""

    def sample(self, params: np.ndarray, /) -> Any:
        """Fresh trajectories per agent under ``params`` (counted in ``n_samples``)."""

    def log_likelihood(self, params: np.ndarray, trajectories: Any, /) -> np.ndarray:
        """``log π_θ(a_h|s_h)`` of every step, time-major ``(K, N, M)``."""

    def gradient(self, params: np.ndarray, trajectories: Any, weights: np.ndarray | None = None, /) -> np.ndarray:
        """The estimate at ``params`` from given trajectories, with an optional weight per trajectory ``(N, M)``."""


def run_rounds(
    truth: GroundTruth[ResultT],
    one_round: OneRound,
    n_rounds: int,
    start: np.ndarray | None = None,
    n_samples: Callable[[], int] | None = None,
    config: dict | None = None,
    reference_objective: float | None = None,
    hint: str = "",
) -> ResultT:
    """
    Run ``n_rounds`` rounds of any federated algorithm and evaluate every global iterate exactly.

    :param truth: the problem (for ground truth and evaluation)
    :param one_round: ``θ̄_t ↦`` the round's :class:`~sb3_fedpg.common.fedmath.RoundResult`
    :param n_rounds: ``T``
    :param start: initial global parameters (``None``: the problem's default)
    :param n_samples: callable returning the environment steps used so far, if any
    :param config: settings to store in the result
    :param reference_objective: the value gaps are measured against (``None``: the problem's optimum)
    :param hint: the step sizes, named when an iterate leaves the problem's domain
    :return: the problem's :class:`~sb3_fedpg.groundtruth.protocol.RunResult`
    :raises InvalidParamsError: when a local or global iterate leaves the problem's domain, naming the round
    """
    if n_rounds < 0:
        raise ValueError(f"need n_rounds >= 0, got {n_rounds}")
    params = truth.initial_params(start)
    history: np.ndarray = np.empty((n_rounds + 1, truth.n_params))
    history[0] = params
    drift = np.empty(n_rounds)
    correction_norm = np.empty(n_rounds)
    start_time = time.perf_counter()
    with single_threaded_torch():
        for t in range(n_rounds):
            try:
                result = one_round(params)
            except InvalidParamsError as err:
                raise type(err)(f"round {t} {err}") from None
            params = result.params
            try:
                truth.check_params(params)
            except InvalidParamsError as err:
                raise type(err)(f"round {t}: {err}; use a smaller learning rate or fewer local steps ({hint})") from None
            history[t + 1] = params
            drift[t] = result.drift
            correction_norm[t] = result.correction_norm
    wall_time = time.perf_counter() - start_time
    optimum = truth.optimum() if reference_objective is None else Optimum(float(reference_objective))
    return truth.result_type(
        params=history.reshape(n_rounds + 1, *truth.param_shape),
        objectives=truth.global_objectives(history),
        optimal_objective=optimum.objective,
        drift=drift,
        correction_norm=correction_norm,
        wall_time=wall_time,
        n_samples=n_samples() if n_samples is not None else 0,
        config=dict(config or {}),
        optimum=optimum.params,
    )


def _named_steps(grad_fn: GradientOracle, hint: str) -> GradientOracle:
    """The oracle, naming the local step and the step sizes when an agent's parameters leave the domain."""

    def oracle(params: np.ndarray, step: int) -> np.ndarray:
        try:
            return grad_fn(params, step)
        except InvalidParamsError as err:
            where = "the anchor" if step < 0 else f"local step {step}"
            raise type(err)(f"({where}, {hint}): {err}") from None

    return oracle


@dataclass(frozen=True)
class _LocalSteps:
    """What every algorithm here has: ``H`` local steps of size ``η`` (and a server step ``η_g``)."""

    local_steps: int
    learning_rate: float

    def check_steps(self, server_learning_rate: float) -> None:
        """Reject ``H < 1`` and step sizes that are not finite and positive."""
        if self.local_steps < 1:
            raise ValueError(f"need local_steps >= 1, got {self.local_steps}")
        positive_float("learning_rate", self.learning_rate)
        positive_float("server_learning_rate", server_learning_rate)

    @property
    def hint(self) -> str:
        """The step sizes, for error messages."""
        return f"learning_rate={self.learning_rate}, H={self.local_steps}"


@dataclass(frozen=True)
class FedPG(_LocalSteps):
    """
    Fast-FedPG (``correction=True``) or FedAvg-PG: rounds of :func:`~sb3_fedpg.common.fedmath.fedpg_round`.

    :param local_steps: ``H``
    :param learning_rate: local step size ``η``
    :param correction: Fast-FedPG or FedAvg-PG
    :param reuse_anchor: reuse the anchor gradient as the first local step's gradient (exact: identical anyway;
        sampled: saves one batch per round)
    :param server_learning_rate: ``η_g``
    :param round_fn: the round (``fedmath.fedpg_round``; a package passes its own reference, which tests spy on)
    """

    correction: bool = True
    reuse_anchor: bool = True
    server_learning_rate: float = 1.0
    round_fn: Callable[..., RoundResult] = fedpg_round

    def __post_init__(self) -> None:
        self.check_steps(self.server_learning_rate)

    def config(self) -> dict[str, Any]:
        """The algorithm's settings."""
        return dict(
            local_steps=self.local_steps,
            learning_rate=self.learning_rate,
            correction=self.correction,
            reuse_anchor=self.reuse_anchor,
            server_learning_rate=self.server_learning_rate,
        )

    def rounds(self, n_agents: int, grad_fn: GradientOracle) -> OneRound:
        """
        :param n_agents: ``N``
        :param grad_fn: the gradient oracle
        :return: the round function
        """
        update = gradient_step(self.learning_rate)
        oracle = _named_steps(grad_fn, self.hint)

        def one_round(params: np.ndarray) -> RoundResult:
            return self.round_fn(
                params,
                oracle,
                n_agents,
                self.local_steps,
                update,
                server_learning_rate=self.server_learning_rate,
                correction=self.correction,
                reuse_anchor=self.reuse_anchor,
            )

        return one_round

    def exact_rounds(self, truth: GroundTruth[RunResult], truncation: int | None = None) -> OneRound:
        """Rounds on the exact (or exactly truncated) gradients."""
        return self.rounds(truth.n_agents, truth.gradient_oracle(truncation))

    def sampled_rounds(self, truth: GroundTruth[RunResult], estimator: SampledEstimator) -> OneRound:
        """Rounds on the estimator's gradients: a fresh batch per agent per oracle call."""
        return self.rounds(truth.n_agents, lambda params, step: estimator(params))


@dataclass(frozen=True)
class FedSVRPGM(_LocalSteps):
    """
    FedSVRPG-M (Wang et al., ICML 2024, Algorithm 1): each round is :func:`~sb3_fedpg.common.fedmath.run_round` with
    :class:`~sb3_fedpg.common.fedmath.MomentumSteps`; the server keeps the momentum ``u_{r+1}``
    (:func:`~sb3_fedpg.common.fedmath.server_momentum`) and ``θ̄_r`` for the next round. The run's ``correction_norm``
    is ``‖u_0 − a_i‖`` in the first round, 0 after (only the first round exchanges anchors).

    :param local_steps: ``H`` (the paper's ``K``)
    :param learning_rate: local step size ``η``
    :param momentum_coef: ``β ∈ (0, 1]`` (``1``: FedAvg-PG)
    :param server_learning_rate: ``η_g`` (the paper's global step ``λ = η_g η H``)
    :param max_importance_weight: sampled runs: truncate the importance weights from above (``None``: the paper's
        exact weights)
    """

    momentum_coef: float = 0.5
    server_learning_rate: float = 1.0
    max_importance_weight: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.momentum_coef <= 1:
            raise ValueError(f"momentum_coef must be in (0, 1], got {self.momentum_coef!r}")
        self.check_steps(self.server_learning_rate)

    def config(self) -> dict[str, Any]:
        """The algorithm's settings."""
        return dict(
            algorithm="fedsvrpg_m",
            local_steps=self.local_steps,
            learning_rate=self.learning_rate,
            momentum_coef=self.momentum_coef,
            server_learning_rate=self.server_learning_rate,
            max_importance_weight=self.max_importance_weight,
        )

    def rounds(self, n_agents: int, make_oracle: MomentumOracleFactory) -> OneRound:
        """
        :param n_agents: ``N``
        :param make_oracle: the round's oracle given ``θ̄_{r−1}`` (``θ̄_0`` in the first round)
        :return: the round function (it keeps the server's momentum and ``θ̄_{r−1}``)
        """
        update = gradient_step(self.learning_rate)
        memory: dict[str, np.ndarray | None] = {"momentum": None, "previous": None}

        def one_round(params: np.ndarray) -> RoundResult:
            previous = params if memory["previous"] is None else memory["previous"]  # θ̄_{−1} = θ̄_0
            solver = MomentumSteps(make_oracle(previous), self.local_steps, update, self.momentum_coef, memory["momentum"])
            result = run_round(params, solver, n_agents, self.server_learning_rate)
            memory["momentum"] = server_momentum(params, result.local_params, self.learning_rate, self.local_steps)
            memory["previous"] = params
            return result

        return one_round

    def exact_rounds(self, truth: GroundTruth[RunResult], truncation: int | None = None) -> OneRound:
        """Rounds on exact gradients (the importance-weighted term's expectation is ``∇J_i(θ̄_{r−1})``)."""
        return self.rounds(truth.n_agents, exact_svrpgm_oracle(truth.gradient_oracle(truncation), truth.n_agents))

    def sampled_rounds(self, truth: GroundTruth[RunResult], estimator: SampledEstimator) -> OneRound:
        """Rounds on the estimator's gradients and exact importance weights (it must be an :class:`ImportanceSampler`)."""
        if not all(hasattr(estimator, name) for name in ("sample", "log_likelihood", "gradient")):
            raise TypeError(f"FedSVRPG-M needs trajectories and their likelihoods, which {type(estimator).__name__} lacks")
        sampler: ImportanceSampler = estimator  # type: ignore[assignment]
        return self.rounds(truth.n_agents, sampled_svrpgm_oracle(sampler, truth.n_agents, self.max_importance_weight))


#: An algorithm that runs on any ground-truth problem.
Algorithm = FedPG | FedSVRPGM


def exact_svrpgm_oracle(grad_fn: GradientOracle, n_agents: int) -> MomentumOracleFactory:
    """
    FedSVRPG-M's oracle with exact gradients: ``ĝ_i(θ_{i,k}) = ∇J_i(θ_{i,k})`` and the importance-weighted term's
    expectation ``∇J_i(θ̄_{r−1})``.

    :param grad_fn: the exact gradient oracle
    :param n_agents: ``N``
    :return: ``make_oracle(θ̄_{r−1})``
    """

    def make_oracle(previous: np.ndarray) -> MomentumOracle:
        at_previous = grad_fn(broadcast_to_agents(previous, n_agents), -1)

        def oracle(params: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
            return grad_fn(params, step), at_previous

        return oracle

    return make_oracle


def sampled_svrpgm_oracle(
    estimator: ImportanceSampler, n_agents: int, max_importance_weight: float | None = None
) -> MomentumOracleFactory:
    """
    FedSVRPG-M's oracle with sampled gradients: every call samples fresh trajectories per agent at ``θ_{i,k}`` and
    returns ``ĝ_i(θ_{i,k}; B)`` and, on the same trajectories, ``(1/M) Σ_m w_m ĝ_i(θ̄_{r−1}; τ_m)`` with the exact
    importance weights ``w_m = p(τ_m | θ̄_{r−1}) / p(τ_m | θ_{i,k})`` of the policies
    (:func:`~sb3_fedpg.common.fedmath.importance_weights`; the transitions cancel).

    :param estimator: the estimator (its sampling stream and sample count)
    :param n_agents: ``N``
    :param max_importance_weight: truncate the weights from above (``None``: the paper's exact weights)
    :return: ``make_oracle(θ̄_{r−1})``
    """

    def make_oracle(previous: np.ndarray) -> MomentumOracle:
        at_previous = broadcast_to_agents(previous, n_agents)

        def oracle(params: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
            trajectories = estimator.sample(params)
            weights = importance_weights(
                estimator.log_likelihood(at_previous, trajectories),
                estimator.log_likelihood(params, trajectories),
                time_axis=0,
                max_weight=max_importance_weight,
            )
            return estimator.gradient(params, trajectories), estimator.gradient(at_previous, trajectories, weights)

        return oracle

    return make_oracle


def exact_run(
    truth: GroundTruth[ResultT],
    algorithm: Algorithm,
    n_rounds: int,
    start: np.ndarray | None = None,
    truncation: int | None = None,
    reference_objective: float | None = None,
) -> ResultT:
    """
    An algorithm on exact gradients (or on the exact expectation of the ``K``-truncated estimator).

    :param truth: the problem
    :param algorithm: :class:`FedPG` or :class:`FedSVRPGM`
    :param n_rounds: ``T``
    :param start: initial global parameters (``None``: the problem's default)
    :param truncation: use the expected ``K``-truncated GPOMDP gradient instead of the exact one
    :param reference_objective: the value gaps are measured against (``None``: the problem's optimum)
    :return: the problem's :class:`~sb3_fedpg.groundtruth.protocol.RunResult`
    """
    config = dict(
        estimator="exact" if truncation is None else "truncated",
        truncation=truncation,
        n_rounds=n_rounds,
        **algorithm.config(),
        **truth.settings(),
    )
    return run_rounds(
        truth,
        algorithm.exact_rounds(truth, truncation),
        n_rounds,
        start,
        config=config,
        reference_objective=reference_objective,
        hint=algorithm.hint,
    )


def sampled_run(
    truth: GroundTruth[ResultT],
    algorithm: Algorithm,
    n_rounds: int,
    horizon: int,
    n_trajectories: int,
    baseline: Baseline = "leave_one_out",
    seed: int | None = 0,
    start: np.ndarray | None = None,
    reference_objective: float | None = None,
) -> ResultT:
    """
    An algorithm on the problem's truncated GPOMDP gradients (``K`` steps, ``M`` trajectories per agent per batch).

    Each oracle call draws a fresh independent batch for every agent; Fast-FedPG and FedAvg-PG reuse the anchor batch
    at ``ℓ = 0`` when ``reuse_anchor`` (so a round costs ``H`` batches per agent, ``H + 1`` otherwise), FedSVRPG-M's
    round costs ``H`` batches: equal rounds are equal samples. The recorded gaps are exact.

    :param truth: the problem
    :param algorithm: :class:`FedPG` or :class:`FedSVRPGM`
    :param n_rounds: ``T``
    :param horizon: truncation ``K``
    :param n_trajectories: ``M`` trajectories per agent per batch
    :param baseline: ``"leave_one_out"`` or ``"none"``
    :param seed: sampling seed
    :param start: initial global parameters (``None``: the problem's default)
    :param reference_objective: the value gaps are measured against (``None``: the problem's optimum)
    :return: the problem's :class:`~sb3_fedpg.groundtruth.protocol.RunResult` (exact gaps of the sampled iterates)
    """
    estimator = truth.estimator(horizon, n_trajectories, baseline, seed)
    config = dict(
        estimator="gpomdp",
        horizon=horizon,
        n_trajectories=n_trajectories,
        baseline=baseline,
        seed=seed,
        n_rounds=n_rounds,
        **algorithm.config(),
        **truth.settings(),
    )
    return run_rounds(
        truth,
        algorithm.sampled_rounds(truth, estimator),
        n_rounds,
        start,
        n_samples=lambda: estimator.n_samples,
        config=config,
        reference_objective=reference_objective,
        hint=algorithm.hint,
    )

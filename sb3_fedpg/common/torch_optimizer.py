"""
Any torch optimiser as every agent's **local** optimiser: SB3's ``policy_kwargs['optimizer_class']`` and
``policy_kwargs['optimizer_kwargs']`` (issue 27).

SB3 applies ``optimizer_class(policy.parameters(), lr=lr_schedule(1), **optimizer_kwargs)`` to its one policy. Here
each agent holds its own copy of the actor while a round runs, and its own critic for good, so the optimiser is each
agent's: :class:`AgentOptimizer` is one torch optimiser whose parameters are ``N`` separate leaf tensors, one row of
the stacked ``(n_agents, n_params)`` parameters per agent. Torch optimisers keep their state per parameter tensor
(Adam's moments *and* its ``step``) and skip a parameter whose ``.grad`` is ``None``, so one optimiser over the rows
is exactly ``N`` independent optimisers, one per agent, and an agent left out of a step (FederatedPPO's per-agent KL
early stop) keeps its parameters and its state untouched.

This holds for every optimiser that treats each parameter tensor on its own — every ``torch.optim`` optimiser but
three, refused by :func:`check_optimizer` with the reason: ``LBFGS`` (its ``step`` needs a closure that recomputes the
loss: one local step here is one fresh batch and one gradient), ``SparseAdam`` (sparse gradients only; the batched
policy's are dense) and ``Muon`` (2-D weight matrices only; an agent's parameters are one flat row).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch as th

#: torch optimisers refused, with the reason and what to use instead
REFUSED_OPTIMIZERS: dict[str, str] = {
    "LBFGS": "its step() needs a closure that re-evaluates the loss on the same data, while each local step here is "
    "one fresh on-policy batch and one gradient (there is no loss to re-evaluate). Use th.optim.Adam, SGD or RMSprop.",
    "SparseAdam": "it takes sparse gradients only, and the batched policy's gradients are dense. Use th.optim.Adam.",
    "Muon": "it orthogonalises 2-D weight matrices, while each agent's parameters here are one flat row (the batched "
    "network's layers are stacked across agents). Use th.optim.Adam or SGD.",
}
#: ``optimizer_kwargs`` the algorithm sets itself
RESERVED_KWARGS: dict[str, str] = {
    "lr": "the step size is the algorithm's: learning_rate (a float or schedule) for the actor, and for FederatedPPO "
    "the critic too, FederatedPG's critic_learning_rate for its critics (as SB3, which passes lr=lr_schedule(1)).",
    "maximize": "the algorithm chooses the direction: the federated algorithms ascend the return by handing torch the "
    "negative of the ascent direction (and the loss gradient as it is for FederatedPPO).",
    "params": "the algorithm gives the optimiser each agent's rows.",
}


def named_optimizers() -> dict[str, type[th.optim.Optimizer]]:
    """
    :return: the optimiser classes a weights-only file may name (by class name), from ``torch.optim`` and SB3 only:
        the ones :func:`check_optimizer` accepts
    """
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    names = ("Adam", "AdamW", "RMSprop", "SGD", "Adadelta", "Adafactor", "Adagrad", "Adamax", "ASGD", "NAdam", "RAdam")
    table = {name: getattr(th.optim, name) for name in (*names, "Rprop") if hasattr(th.optim, name)}
    table["RMSpropTFLike"] = RMSpropTFLike
    return table


def requested_optimizer(policy_kwargs: Mapping[str, Any] | None) -> tuple[type[th.optim.Optimizer], dict[str, Any]] | None:
    """
    The torch optimiser ``policy_kwargs`` asks for, read as SB3's ``ActorCriticPolicy`` reads it: ``optimizer_class``
    (default ``th.optim.Adam``) with ``optimizer_kwargs`` (``None``: ``{}``, and ``eps=1e-5`` for ``th.optim.Adam``, as
    SB3 sets).

    :param policy_kwargs: the model's ``policy_kwargs``
    :return: ``(optimizer_class, optimizer_kwargs)``, or ``None`` when neither ``optimizer_class`` nor a non-empty
        ``optimizer_kwargs`` is given (the algorithm's built-in local optimiser)
    """
    policy_kwargs = policy_kwargs or {}
    optimizer_class = policy_kwargs.get("optimizer_class")
    optimizer_kwargs = policy_kwargs.get("optimizer_kwargs")
    if optimizer_class is None and not optimizer_kwargs:
        return None
    optimizer_class = th.optim.Adam if optimizer_class is None else optimizer_class
    if optimizer_kwargs is None:
        optimizer_kwargs = {"eps": 1e-5} if optimizer_class is th.optim.Adam else {}
    return optimizer_class, dict(optimizer_kwargs)


def check_optimizer(optimizer_class: Any, optimizer_kwargs: Any, algo: str) -> None:
    """
    Refuse an optimiser that cannot be each agent's local optimiser, before anything is built: not a
    ``th.optim.Optimizer``, one of :data:`REFUSED_OPTIMIZERS`, keyword arguments the algorithm sets
    (:data:`RESERVED_KWARGS`) or that the class does not take. One step on a probe tensor checks the rest.

    :param optimizer_class: ``policy_kwargs['optimizer_class']``
    :param optimizer_kwargs: its keyword arguments
    :param algo: the algorithm's name, for the message
    :raises ValueError: naming the class or keyword, why, and what to use
    """
    where = f"policy_kwargs['optimizer_class']={getattr(optimizer_class, '__name__', optimizer_class)!r} ({algo})"
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, th.optim.Optimizer)):
        raise ValueError(f"{where}: not a torch optimiser class (a subclass of th.optim.Optimizer, e.g. th.optim.Adam).")
    for base in optimizer_class.__mro__:
        if base.__module__.startswith("torch.optim") and base.__name__ in REFUSED_OPTIMIZERS:
            raise ValueError(f"{where} cannot be each agent's local optimiser: {REFUSED_OPTIMIZERS[base.__name__]}")
    if not isinstance(optimizer_kwargs, Mapping):
        raise ValueError(f"{where}: policy_kwargs['optimizer_kwargs'] must be a dict, got {optimizer_kwargs!r}.")
    for key in optimizer_kwargs:
        if key in RESERVED_KWARGS:
            raise ValueError(f"policy_kwargs['optimizer_kwargs'][{key!r}] cannot be set ({algo}): {RESERVED_KWARGS[key]}")
    probe = th.zeros(2)
    try:
        optimizer = optimizer_class([probe], lr=1e-3, **optimizer_kwargs)  # type: ignore[call-arg]
        probe.grad = th.ones(2)
        optimizer.step()
    except Exception as error:  # any failure: this optimiser cannot step a flat row with a dense gradient
        raise ValueError(
            f"{where} with optimizer_kwargs={dict(optimizer_kwargs)!r} cannot step one agent's parameters (a flat row "
            f"with a dense gradient, lr set by the algorithm, no closure): {type(error).__name__}: {error}"
        ) from error


class AgentOptimizer:
    """
    One torch optimiser over the rows of stacked per-agent parameters ``(n_agents, n_params)``: each row a separate
    leaf tensor, so each agent has its own optimiser state, and the agents left out of a step keep their parameters
    and their state (torch skips a parameter whose ``.grad`` is ``None``). Same call as
    :meth:`sb3_fedpg.ppo.local_solver.BatchedAdam.step_`.

    The state persists across rounds, as the built-in per-agent Adam's moments do (each agent's optimiser lives on
    with its critic; the round only restarts the actor rows from ``θ̄``). Its ``state_dict`` is the torch optimiser's
    (parameter ``i`` is agent ``i``), saved with the model and in checkpoints.

    :param optimizer_class: the torch optimiser class (checked by :func:`check_optimizer`)
    :param optimizer_kwargs: its keyword arguments (not ``lr``: the algorithm sets it at every step)
    :param n_agents: number of agents
    :param n_params: parameters per agent
    :param learning_rate: the step size it is built with (each step sets its own)
    :param device: where the rows live
    """

    def __init__(
        self,
        optimizer_class: type[th.optim.Optimizer],
        optimizer_kwargs: Mapping[str, Any],
        n_agents: int,
        n_params: int,
        learning_rate: float,
        device: th.device | str = "cpu",
    ) -> None:
        #: the rows being stepped (the parameters are copied in and out: their tensors change every round, while
        #: the optimiser's state is keyed by its own leaves)
        self.rows = th.zeros(n_agents, n_params, device=device)
        self.leaves = list(self.rows.unbind(0))  # views of a tensor without grad: leaves, one per agent
        self.optimizer = optimizer_class(self.leaves, lr=learning_rate, **optimizer_kwargs)  # type: ignore[call-arg]

    @th.no_grad()
    def step_(self, params: th.Tensor, grad: th.Tensor, learning_rate: float, agents: list[int] | None = None) -> None:
        """
        One step of every chosen agent's optimiser on its row of ``params``, in place.

        :param params: ``(n, p)``, changed in place (only the chosen agents' rows change)
        :param grad: gradient of the loss to **minimise**, ``(n, p)``
        :param learning_rate: step size
        :param agents: the agents that step (``None``: all)
        """
        self.rows.copy_(params)
        chosen = range(len(self.leaves)) if agents is None else agents
        for i in chosen:
            self.leaves[i].grad = grad[i]
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        try:
            self.optimizer.step()
        finally:
            for leaf in self.leaves:
                leaf.grad = None
        params.copy_(self.rows)

    def state_dict(self) -> dict[str, Any]:
        """:return: the torch optimiser's state dict (parameter ``i``: agent ``i``)"""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """
        :param state: the output of :meth:`state_dict`
        :param strict: accepted for SB3's ``set_parameters``, which passes it to modules (an optimiser state is
            always loaded whole)
        :raises ValueError: for the state of the built-in per-agent Adam (a file written without
            ``policy_kwargs['optimizer_class']``), or of another number of agents
        """
        if "param_groups" not in state:
            raise ValueError(
                "the saved local optimiser state is the built-in per-agent rule's (the model was saved without "
                "policy_kwargs['optimizer_class']), not a torch optimiser's: load it with the policy_kwargs it was saved "
                "with."
            )
        # a copy: torch keeps the given tensors (same device and dtype), which the caller may go on changing
        self.optimizer.load_state_dict(copy.deepcopy(state))

    def nonfinite_agents(self) -> dict[int, list[str]]:
        """:return: agent → the entries of its optimiser state holding NaN/inf (empty when all are finite)"""
        bad: dict[int, list[str]] = {}
        entries = [
            (agent, str(key), value)
            for agent, leaf in enumerate(self.leaves)
            for key, value in self.optimizer.state.get(leaf, {}).items()
            if th.is_tensor(value) and value.is_floating_point() and value.numel()
        ]
        if not entries:
            return bad
        # One fused norm over every entry first (NaN/inf propagate into a norm): the per-entry check, one call per
        # agent and state key after every local step, was a tenth of FederatedA2C's round. Checked entry by entry
        # only when some norm is not finite (a NaN/inf, or a finite norm overflowing).
        norms = th._foreach_norm([value for _, _, value in entries])
        if bool(th.isfinite(th.stack(norms)).all()):
            return bad
        for agent, key, value in entries:
            if not bool(th.isfinite(value).all()):
                bad.setdefault(agent, []).append(key)
        return bad


class StackedParameterOptimizer(AgentOptimizer):
    """
    :class:`AgentOptimizer` with ``torch.optim``'s ``zero_grad()`` / ``step()`` over one stacked parameter
    ``(n_agents, n_params)`` whose ``.grad`` autograd fills (FederatedPG's local critics).

    :param optimizer_class: the torch optimiser class
    :param optimizer_kwargs: its keyword arguments
    :param parameter: the stacked parameter (one row per agent)
    :param learning_rate: the step size of every step
    """

    def __init__(
        self,
        optimizer_class: type[th.optim.Optimizer],
        optimizer_kwargs: Mapping[str, Any],
        parameter: th.Tensor,
        learning_rate: float,
    ) -> None:
        n_agents, n_params = parameter.shape
        super().__init__(optimizer_class, optimizer_kwargs, n_agents, n_params, learning_rate, parameter.device)
        self.parameter = parameter
        self.learning_rate = learning_rate

    def zero_grad(self) -> None:
        """Forget the parameter's gradient (as ``th.optim.Optimizer.zero_grad`` with ``set_to_none=True``)."""
        self.parameter.grad = None

    def step(self) -> None:
        """Step every agent's row along the parameter's gradient (minimising; nothing happens without one)."""
        if self.parameter.grad is not None:
            self.step_(self.parameter.detach(), self.parameter.grad, self.learning_rate)

"""
Local update rules applied by each agent to its corrected direction.

Each built-in rule keeps its state (if any) as buffers of shape ``(n_agents, n_params)`` so that
it is saved with the model and stays local to each agent; :class:`TorchLocalOptimizer` keeps a torch
optimiser's state per agent.
"""

from __future__ import annotations

import torch as th
from torch import nn

from sb3_fedpg.common.fedmath import LocalUpdate, gradient_step, row_norms
from sb3_fedpg.common.torch_optimizer import AgentOptimizer


def _clip(direction: th.Tensor, max_norm: float | None) -> th.Tensor:
    if max_norm is None:
        return direction
    scale = (max_norm / (row_norms(direction) + 1e-12)).clamp(max=1.0)
    return direction * scale.unsqueeze(1)


class LocalOptimizer(nn.Module):
    """
    Plain gradient ascent ``θ ← θ + η d`` (what the paper analyses).

    :param n_agents: number of agents
    :param n_params: size of the federated parameter vector
    """

    def __init__(self, n_agents: int, n_params: int) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.n_params = n_params

    def make_update(self, learning_rate: float, max_grad_norm: float | None = None) -> LocalUpdate:
        """
        :param learning_rate: local step size ``η``
        :param max_grad_norm: clip each agent's direction to this norm first (``None``: no clipping)
        :return: the update for this round
        """
        step = gradient_step(learning_rate)
        return lambda params, direction, i: step(params, _clip(direction, max_grad_norm), i)


class LocalAdam(LocalOptimizer):
    """
    Adam on the corrected direction, per agent (element-wise on the stacked parameters).

    A heuristic outside the paper's theory, for neural benchmarks. The moments are each
    agent's own and persist across rounds.

    :param n_agents: number of agents
    :param n_params: size of the federated parameter vector
    :param betas: Adam's moment decay rates
    :param eps: Adam's epsilon
    """

    # buffers (registered in __init__)
    exp_avg: th.Tensor
    exp_avg_sq: th.Tensor
    step_count: th.Tensor

    def __init__(self, n_agents: int, n_params: int, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(n_agents, n_params)
        self.betas = betas
        self.eps = eps
        self.register_buffer("exp_avg", th.zeros(n_agents, n_params))
        self.register_buffer("exp_avg_sq", th.zeros(n_agents, n_params))
        self.register_buffer("step_count", th.zeros((), dtype=th.long))

    def make_update(self, learning_rate: float, max_grad_norm: float | None = None) -> LocalUpdate:
        beta1, beta2 = self.betas

        def update(params: th.Tensor, direction: th.Tensor, i: int) -> th.Tensor:
            direction = _clip(direction, max_grad_norm)
            self.step_count += 1
            t = int(self.step_count)
            self.exp_avg.mul_(beta1).add_(direction, alpha=1 - beta1)
            self.exp_avg_sq.mul_(beta2).addcmul_(direction, direction, value=1 - beta2)
            m_hat = self.exp_avg / (1 - beta1**t)
            v_hat = self.exp_avg_sq / (1 - beta2**t)
            return params + learning_rate * m_hat / (v_hat.sqrt() + self.eps)

        return update


class TorchLocalOptimizer(AgentOptimizer):
    """
    Any torch optimiser on the corrected direction, per agent (``policy_kwargs['optimizer_class']`` /
    ``optimizer_kwargs``): agent ``i``'s optimiser steps its row along ``−d_i`` (torch minimises; the direction is an
    ascent direction), after the same clipping as the built-in rules. A heuristic outside the paper's theory, like
    :class:`LocalAdam`; its state is each agent's own and persists across rounds (see
    :class:`~sb3_fedpg.common.torch_optimizer.AgentOptimizer`).

    :param optimizer_class: the torch optimiser class
    :param optimizer_kwargs: its keyword arguments
    :param n_agents: number of agents
    :param n_params: size of the federated parameter vector
    :param learning_rate: the step size it is built with (each round's :meth:`make_update` sets its own)
    :param device: where the rows live
    """

    def make_update(self, learning_rate: float, max_grad_norm: float | None = None) -> LocalUpdate:
        """
        :param learning_rate: local step size ``η``
        :param max_grad_norm: clip each agent's direction to this norm first (``None``: no clipping)
        :return: the update for this round
        """

        def update(params: th.Tensor, direction: th.Tensor, i: int) -> th.Tensor:
            new_params = params.detach().clone()  # params may be θ̄ broadcast to the agents (a view)
            self.step_(new_params, -_clip(direction, max_grad_norm), learning_rate)
            return new_params

        return update


LOCAL_OPTIMIZERS: dict[str, type[LocalOptimizer]] = {"sgd": LocalOptimizer, "adam": LocalAdam}

"""
FedSVRPG-M's local solver for neural policies, and the server's memory between rounds.

The math is :mod:`sb3_fedpg.common.fedmath`'s (:func:`~sb3_fedpg.common.fedmath.momentum_direction`,
:func:`~sb3_fedpg.common.fedmath.run_momentum_steps`, :func:`~sb3_fedpg.common.fedmath.server_momentum`); this module
only supplies the batches and gradients from :class:`~sb3_fedpg.fedpg.learner.PolicyGradientLearner` (the same
batched actor, critics, estimators and gradient code as :class:`~sb3_fedpg.FederatedPG`).
"""

from __future__ import annotations

import torch as th
from torch import nn

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.estimators import EstimatorWeights
from sb3_fedpg.fedpg.learner import BatchSampler, PolicyGradientLearner, RoundStats


class MomentumMemory(nn.Module):
    """
    What the FedSVRPG-M server keeps between rounds and sends to the agents with ``θ̄_r``: the momentum ``u_r`` and
    the previous global parameters ``θ̄_{r−1}`` (zeros, and ``rounds`` 0, before the first round). Saved with the model.

    :param n_params: size of the federated parameter vector
    """

    # buffers (registered in __init__)
    rounds: th.Tensor
    momentum: th.Tensor
    previous_params: th.Tensor

    def __init__(self, n_params: int) -> None:
        super().__init__()
        self.n_params = n_params
        # Allocated (p,) up front, so the state dict never holds an empty tensor (SB3's get_parameters/set_parameters
        # round trip randomises every tensor and checks that each changed); ``rounds`` comes first, as that test
        # leaves a state dict's last entry out.
        self.register_buffer("rounds", th.zeros(()))
        self.register_buffer("momentum", th.zeros(n_params))
        self.register_buffer("previous_params", th.zeros(n_params))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # Files written before ``rounds`` existed hold empty buffers before the first round and (p,) after.
        saved = state_dict.get(prefix + "momentum")
        if prefix + "rounds" not in state_dict and saved is not None:
            state_dict[prefix + "rounds"] = th.tensor(float(saved.numel() > 0))
        for name in ("momentum", "previous_params"):
            if prefix + name in state_dict and state_dict[prefix + name].numel() == 0:
                state_dict[prefix + name] = th.zeros_like(getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def started(self) -> bool:
        """Whether a round has completed (the momentum exists)."""
        return bool(self.rounds > 0)

    @th.no_grad()
    def advance(self, momentum: th.Tensor, previous_params: th.Tensor) -> None:
        """
        :param momentum: ``u_{r+1}`` (:func:`~sb3_fedpg.common.fedmath.server_momentum`)
        :param previous_params: ``θ̄_r``, the global parameters the completed round started from
        """
        self.momentum.copy_(momentum.detach())
        self.previous_params.copy_(previous_params.detach())
        self.rounds.add_(1)


class MomentumPolicyGradientSteps:
    """
    FedSVRPG-M's local round for all agents at once (a :class:`~sb3_fedpg.common.fedmath.LocalSolver`):
    ``H`` steps ``θ_{i,k+1} = θ_{i,k} + η u_{i,k}`` along
    ``u_{i,k} = β ĝ_i(θ_{i,k}; B_k) + (1 − β) (u_r + ĝ_i(θ_{i,k}; B_k) − ŵ ĝ_i(θ̄_{r−1}; B_k))``, each on a fresh batch
    ``B_k`` sampled at ``θ_{i,k}``; the second gradient evaluates the same batch at ``θ̄_{r−1}``, importance weighted
    (:meth:`~sb3_fedpg.fedpg.learner.PolicyGradientLearner.importance_weighted_gradient`; one extra backward per step,
    no extra samples).

    Only the first round exchanges anchors: with no momentum yet, :meth:`anchor` computes ``a_i = ĝ_i(θ̄_0)`` on one
    batch and the server's average ``g`` becomes ``u_0`` (``θ̄_{−1} = θ̄_0``, and the anchor batch is reused at
    ``k = 0``, so every round costs ``H`` batches). In later rounds :meth:`anchor` returns zeros without sampling.

    :param learner: the agents' learner (batched actor, critics, estimator)
    :param sample: the batch sampler
    :param local_steps: ``H``
    :param local_update: the local update rule (plain gradient ascent, optionally clipped)
    :param momentum_coef: ``β``
    :param memory: the server's ``u_r`` and ``θ̄_{r−1}`` (read when the round runs)
    :param max_importance_weight: truncation of the importance weights (``None``: untruncated)
    """

    def __init__(
        self,
        learner: PolicyGradientLearner,
        sample: BatchSampler,
        local_steps: int,
        local_update: fedmath.LocalUpdate,
        momentum_coef: float,
        memory: MomentumMemory,
        max_importance_weight: float | None = None,
    ) -> None:
        self.learner = learner
        self.sample = sample
        self.local_steps = local_steps
        self.local_update = local_update
        self.momentum_coef = momentum_coef
        self.memory = memory
        self.max_importance_weight = max_importance_weight
        learner.stats = RoundStats()  # this round's statistics start empty

    @property
    def stats(self) -> RoundStats:
        """:return: this round's statistics (the learner's)"""
        return self.learner.stats

    def _gradient(self, params: th.Tensor, step: int) -> tuple[th.Tensor, tuple[RolloutBatch, EstimatorWeights]]:
        learner = self.learner
        batch = self.sample(params.detach(), step)
        weights = learner.batch_weights(batch)
        learner.stats.add("train/batch_return", float(batch.rewards.sum(1).mean()))
        return learner.policy_gradient(params, batch, weights), (batch, weights)

    def anchor(self, global_params: th.Tensor, n_agents: int) -> th.Tensor:
        stacked = fedmath.broadcast_to_agents(global_params, n_agents)
        if self.memory.started:
            return th.zeros_like(stacked)
        return self._gradient(stacked, -1)[0]

    def local_round(self, global_params: th.Tensor, anchor_grads: th.Tensor, global_grad: th.Tensor) -> th.Tensor:
        learner, first = self.learner, not self.memory.started
        n = anchor_grads.shape[0]
        momentum = global_grad if first else self.memory.momentum
        previous = fedmath.broadcast_to_agents(global_params if first else self.memory.previous_params, n)
        learner.stats.add("fed/momentum_norm", float(th.linalg.vector_norm(momentum)))

        def oracle(params: th.Tensor, step: int) -> tuple[th.Tensor, th.Tensor]:
            local, (batch, weights) = self._gradient(params, step)
            behaviour = learner.log_prob(params.detach(), batch)
            with learner.actor.frozen_buffers():  # the same batch at θ̄_{r−1}: its statistics are counted once
                at_previous = learner.importance_weighted_gradient(
                    previous, batch, weights, behaviour, max_weight=self.max_importance_weight
                )
            return local, at_previous

        return fedmath.run_momentum_steps(
            global_params,
            oracle,
            self.local_steps,
            self.local_update,
            self.momentum_coef,
            momentum,
            n,
            first_grads=anchor_grads if first else None,
        )

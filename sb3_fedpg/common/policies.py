"""
The policy class behind the federated algorithms' ``MlpPolicy``: SB3's ``ActorCriticPolicy`` without a global critic.

Only the actor is federated. Each agent's critic is local (its values depend on its own reward) and lives in the
algorithm (``model.critics``), so the policy's own value head is never trained: :meth:`predict_values` refuses to
answer from it and names what to use instead.
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

#: Why the policy has no value function, and where the trained values are.
NO_GLOBAL_CRITIC = (
    "a federated policy has no global critic: each agent's critic is local to the agent (its values follow its own "
    "reward) and is never averaged, so the policy's value head is never trained. Use "
    "model.predict_agent_values(obs) for every agent's own V_i(obs); their mean is the value of the average "
    "objective J = (1/N) Σ_i J_i."
)


class FederatedActorCriticPolicy(ActorCriticPolicy):
    """
    SB3's ``ActorCriticPolicy`` (same arguments, layout and ``predict``) whose untrained value head cannot be read.

    ``predict_values`` raises (see :data:`NO_GLOBAL_CRITIC`). ``forward`` and ``evaluate_actions`` still return
    the head's values next to the actions, as SB3's signatures demand: do not read them.
    """

    def predict_values(self, obs: th.Tensor) -> th.Tensor:  # type: ignore[override]
        """
        :param obs: observations
        :raises NotImplementedError: always (the value head is untrained; see :data:`NO_GLOBAL_CRITIC`)
        """
        raise NotImplementedError(NO_GLOBAL_CRITIC)

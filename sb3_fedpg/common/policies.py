"""
The policy classes behind the federated algorithms' ``MlpPolicy``, ``CnnPolicy`` and ``MultiInputPolicy``: SB3's
actor-critic policies without a global critic, and with one fix the federated split needs.

- Only the actor is federated. Each agent's critic is local (its values depend on its own reward) and lives in the
  algorithm (``model.critics``), so the policy's own value head is never trained: :meth:`predict_values` refuses to
  answer from it and names what to use instead.
- Federated algorithms build the policy with ``share_features_extractor=False`` (the actor is federated, each agent's
  critic local). SB3's ``ActorCriticPolicy._get_constructor_parameters`` leaves that flag out, so ``policy.save`` /
  ``ActorCriticPolicy.load`` of the policy alone would rebuild a *shared* extractor and load the critic's extractor
  weights into the actor. These classes keep the flag.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs

#: Why the policy has no value function, and where the trained values are.
NO_GLOBAL_CRITIC = (
    "a federated policy has no global critic: each agent's critic is local to the agent (its values follow its own "
    "reward) and is never averaged, so the policy's value head is never trained. Use "
    "model.predict_agent_values(obs) for every agent's own V_i(obs); their mean is the value of the average "
    "objective J = (1/N) Σ_i J_i."
)


class FederatedPolicyBase(ActorCriticPolicy):
    """The two fixes above, for any SB3 actor-critic policy class (subclass it first)."""

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "share_features_extractor": self.share_features_extractor}

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """
        :param obs: observations
        :raises NotImplementedError: always (the value head is untrained; see :data:`NO_GLOBAL_CRITIC`)
        """
        raise NotImplementedError(NO_GLOBAL_CRITIC)


class FederatedActorCriticPolicy(FederatedPolicyBase):
    """
    SB3's ``ActorCriticPolicy`` (``MlpPolicy``; same arguments, layout and ``predict``) whose untrained value head
    cannot be read and whose saved constructor parameters keep the extractor sharing.

    ``predict_values`` raises (see :data:`NO_GLOBAL_CRITIC`). ``forward`` and ``evaluate_actions`` still return
    the head's values next to the actions, as SB3's signatures demand: do not read them.
    """


class FederatedActorCriticCnnPolicy(FederatedPolicyBase, ActorCriticCnnPolicy):
    """SB3's ``ActorCriticCnnPolicy`` (``CnnPolicy``, ``NatureCNN``), federated as :class:`FederatedActorCriticPolicy`."""


class FederatedMultiInputActorCriticPolicy(FederatedPolicyBase, MultiInputActorCriticPolicy):
    """SB3's ``MultiInputActorCriticPolicy`` (``MultiInputPolicy``), federated as :class:`FederatedActorCriticPolicy`."""
